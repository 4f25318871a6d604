"""The CLIP loader and harvesting: on the random-weight stand-in (no network: the hub probe is forced to
fail), and through a planted local Hugging Face cache, on which chapter 8 also runs once (mechanics only)."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sae_lib import StandInForbiddenError
from sae_lib import clip as clip_module
from sae_lib.clip import check_image, embed_captions, embed_images, harvest, load_clip, pair_embeddings, try_load_clip

ROOT = Path(__file__).resolve().parents[1]
HF_REPO = "timm/vit_base_patch32_clip_224.openai"  # where open_clip looks for OpenAI's ViT-B/32


@pytest.fixture(scope="module")
def standin():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(clip_module, "hub_unreachable_reason", lambda timeout=3.0: "offline in tests")
        mp.delenv("SAE_BOOK_NO_STANDINS", raising=False)
        return load_clip(seed=0)


@pytest.fixture
def pictures():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (40 + 10 * i, 50, 3), dtype=np.uint8)) for i in range(3)]


def test_standin_is_labelled_and_reproducible(standin, monkeypatch, capsys):
    assert standin.pretrained is False and "stand-in" in standin.name
    assert standin.extras["checkpoint"] is None and standin.extras["embed_dim"] == 512
    assert not standin.model.training
    monkeypatch.setattr(clip_module, "hub_unreachable_reason", lambda timeout=3.0: "offline in tests")
    again = load_clip(seed=0)
    assert "RANDOM WEIGHTS" in capsys.readouterr().out
    assert torch.equal(again.model.text_projection, standin.model.text_projection)
    other = load_clip(seed=1)
    assert not torch.equal(other.model.text_projection, standin.model.text_projection)


def test_standin_can_be_forbidden(monkeypatch):
    monkeypatch.setattr(clip_module, "hub_unreachable_reason", lambda timeout=3.0: "offline in tests")
    monkeypatch.setenv("SAE_BOOK_NO_STANDINS", "1")
    with pytest.raises(StandInForbiddenError, match="offline in tests"):
        load_clip()


def test_unknown_checkpoint_is_an_error():
    with pytest.raises(ValueError, match="unknown ViT-B-32 checkpoint"):
        load_clip("no-such-tag")


def test_embeddings_have_unit_length_and_do_not_depend_on_batching(standin, pictures):
    arrays = [np.asarray(p) for p in pictures]
    a = embed_images(standin, pictures, batch_size=2, progress=False)
    b = embed_images(standin, arrays, batch_size=3, progress=False)
    assert a.shape == (3, 512) and a.dtype == torch.float32
    torch.testing.assert_close(a.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    t = embed_captions(standin, ["a red circle", "a cat", "a rocket at night"], batch_size=2, progress=False)
    assert t.shape == (3, 512)
    torch.testing.assert_close(t.norm(dim=1), torch.ones(3))


@pytest.mark.parametrize("bad, error, match", [
    (Image.new("L", (32, 32)), ValueError, "mode 'L'"),
    (Image.new("RGBA", (32, 32)), ValueError, "mode 'RGBA'"),
    (np.zeros((32, 32), dtype=np.uint8), ValueError, r"shape \(height, width, 3\)"),
    (np.zeros((32, 32, 3), dtype=np.float32), ValueError, "uint8"),
    (Image.new("RGB", (4, 32)), ValueError, "too small"),
    ("cat.jpg", TypeError, "PIL.Image"),
])
def test_bad_images_are_named(bad, error, match):
    with pytest.raises(error, match=match):
        check_image(bad, 7)


def test_bad_image_lists_and_captions(standin, pictures):
    with pytest.raises(ValueError, match="images is empty"):
        embed_images(standin, [], progress=False)
    with pytest.raises(TypeError, match="list of images"):
        embed_images(standin, pictures[0], progress=False)
    with pytest.raises(ValueError, match="image 1 has mode 'L'"):
        embed_images(standin, [pictures[0], pictures[1].convert("L")], progress=False)
    with pytest.raises(ValueError, match="captions is empty"):
        embed_captions(standin, [], progress=False)
    with pytest.raises(ValueError, match="caption 1 is empty"):
        embed_captions(standin, ["a cat", "  "], progress=False)
    with pytest.raises(TypeError, match="caption 0 is a int"):
        embed_captions(standin, [3], progress=False)
    with pytest.raises(TypeError, match="list of strings"):
        embed_captions(standin, "a cat", progress=False)
    with pytest.raises(TypeError, match="LoadedModel"):
        embed_captions(object(), ["a cat"], progress=False)


def test_harvest_balances_and_pairs(standin, pictures):
    captions = [["one", "uno", "eins"], ["two"], ["three", "tres"]]
    every = harvest(standin, pictures, captions, progress=False)
    assert len(every) == 2 * 6 and int(every.is_image.sum()) == 6
    assert every.image_index.tolist() == [0, 0, 0, 1, 2, 2] * 2
    assert every.captions == ["one", "uno", "eins", "two", "three", "tres"]
    torch.testing.assert_close(every.x[:6], every.image_embeddings[every.image_index[:6]])
    torch.testing.assert_close(every.x[6:], every.caption_embeddings)
    first = harvest(standin, pictures, captions, captions_per_image=1, progress=False)
    assert len(first) == 6 and first.captions == ["one", "two", "three"]
    torch.testing.assert_close(first.x[3:], every.caption_embeddings[[0, 3, 4]])


def test_harvest_rejects_mismatched_or_empty_captions(standin, pictures):
    with pytest.raises(ValueError, match="3 images but 2 caption lists"):
        harvest(standin, pictures, [["a"], ["b"]], progress=False)
    with pytest.raises(ValueError, match="image 1 needs a non-empty list of captions"):
        harvest(standin, pictures, [["a"], [], ["c"]], progress=False)
    with pytest.raises(ValueError, match="image 0 needs a non-empty list"):
        harvest(standin, pictures, ["a", "b", "c"], progress=False)
    with pytest.raises(ValueError, match="captions_per_image"):
        harvest(standin, pictures, [["a"], ["b"], ["c"]], captions_per_image=0, progress=False)


def test_pair_embeddings_checks_its_inputs():
    images, texts = torch.randn(3, 8), torch.randn(4, 8)
    with pytest.raises(ValueError, match="one image per caption"):
        pair_embeddings(images, texts, [0, 1, 2])
    with pytest.raises(ValueError, match="outside 0..2"):
        pair_embeddings(images, texts, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="1 image\\(s\\) have no caption"):
        pair_embeddings(images, texts, [0, 0, 1, 1])
    with pytest.raises(ValueError, match="same d"):
        pair_embeddings(images, torch.randn(4, 6), [0, 1, 2, 2])
    with pytest.raises(ValueError, match="2 caption texts for 4"):
        pair_embeddings(images, texts, [0, 1, 2, 2], captions=["a", "b"])


def test_try_load_clip_offline_gives_a_reason_and_no_banner(monkeypatch, capsys):
    monkeypatch.setattr(clip_module, "hub_unreachable_reason", lambda timeout=3.0: "offline in tests")
    loaded, reason = try_load_clip()
    assert loaded is None and reason == "offline in tests"
    assert "RANDOM WEIGHTS" not in capsys.readouterr().out


# ----------------------------------------------------------------------------- a planted Hugging Face cache
def _digest(tensors: dict) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].float().contiguous().numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def planted_cache(tmp_path_factory):
    """A local HF cache holding open_clip's OpenAI ViT-B/32 file, with random weights (seed 7) in half
    precision (half the disk); returns (HF_HOME, digest of the planted tensors)."""
    from safetensors.torch import save_file

    from sae_lib.clip import untrained_clip

    home = tmp_path_factory.mktemp("hf_home")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = home / "hub" / f"models--{HF_REPO.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    tensors = {k: v.half().contiguous() for k, v in untrained_clip(seed=7).model.state_dict().items()}
    save_file(tensors, snapshot / "open_clip_model.safetensors")
    return home, _digest(tensors)


def _planted_env(home: Path) -> dict:
    env = dict(os.environ, HF_HOME=str(home), HF_HUB_OFFLINE="1", SAE_BOOK_MECHANICS_ONLY="1",
               SAE_BOOK_NO_STANDINS="1", TQDM_DISABLE="1", SAE_BOOK_PROFILE="ci")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def test_load_clip_reads_exactly_the_planted_weights(planted_cache):
    home, planted = planted_cache
    # A fresh process: huggingface_hub reads HF_HOME and HF_HUB_OFFLINE when it is imported.
    code = ("import sys; sys.path.insert(0, 'tests'); from test_clip import _digest; from sae_lib.clip import load_clip; "
            "c = load_clip(); print(c.pretrained, c.extras['checkpoint']); "
            "print(_digest({k: v.half() for k, v in c.model.state_dict().items()}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_planted_env(home), capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["True", "openai", planted]


def test_chapter_8_runs_on_the_planted_clip(planted_cache, tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    from run_chapter import execute_chapter

    home, _ = planted_cache
    env = _planted_env(home)
    env["SAE_BOOK_REPORTS"] = str(tmp_path)
    execute_chapter(ROOT / "book" / "08_clip_mp_sae.py", out=tmp_path / "08.ipynb", env=env)
    import json

    checks = json.loads((tmp_path / "08_clip_mp_sae.json").read_text())
    analysed = [c for c in checks if c["status"] == "pass"]
    assert analysed and all(c["kind"] == "mechanics" for c in analysed)  # nothing else is asserted
    text = (tmp_path / "08.ipynb").read_text()
    assert "analysing: ViT-B-32 (openai)" in text and "RANDOM WEIGHTS" not in text
