"""The mini CLIP: tokenizer, towers, loss, measurements, training (deterministic, it learns), saving."""

import pytest
import torch

from sae_lib.clip import harvest
from sae_lib.image_data import caption_vocabulary, generated_scenes
from sae_lib.mini_clip import (MiniClip, MiniClipConfig, WordTokenizer, contrastive_loss, load_mini_clip, modality_gap,
                               retrieval_accuracy, save_mini_clip, train_mini_clip, untrained_mini_clip)


def test_tokenizer_maps_words_pads_and_marks_unknown_words():
    tok = WordTokenizer(["a", "red", "circle"], max_words=5)
    rows = tok(["a red circle", "red, zebra"])
    assert rows.tolist() == [[2, 3, 4, 0, 0], [3, tok.index[","] if "," in tok.index else 1, 1, 0, 0]]
    assert len(tok) == 5
    assert WordTokenizer(caption_vocabulary())(["a " * 30]).shape == (1, 20)  # long captions are cut


def test_towers_differ_and_map_to_one_space():
    cfg = MiniClipConfig(seed=0)
    model = MiniClip(cfg)
    assert model.encode_image(torch.zeros(3, 3, 32, 32)).shape == (3, 64)
    assert model.encode_text(WordTokenizer(cfg.vocabulary)(["a red circle", "two boxes"])).shape == (2, 64)
    assert isinstance(model.logit_scale, torch.nn.Parameter) and abs(model.temperature - 0.07) < 1e-6
    fixed = MiniClip(MiniClipConfig(temperature=0.02))
    assert "logit_scale" not in dict(fixed.named_parameters()) and abs(fixed.temperature - 0.02) < 1e-6
    same = MiniClip(cfg)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), same.state_dict().values()))
    with pytest.raises(ValueError, match="temperature must be None"):
        MiniClipConfig(temperature=0.0)
    with pytest.raises(ValueError, match="multiple of 8"):
        MiniClipConfig(image_size=30)


def test_contrastive_loss_rewards_alignment():
    x = torch.nn.functional.normalize(torch.randn(16, 8), dim=-1)
    scale = torch.tensor(3.0)
    assert contrastive_loss(x, x, scale) < contrastive_loss(x, torch.randn(16, 8), scale)
    assert contrastive_loss(x, x, torch.tensor(9.0)) < contrastive_loss(x, x, scale)  # a colder softmax, if aligned


def test_retrieval_and_gap_on_constructed_embeddings():
    img = torch.eye(200, 256)[:, :256]
    perfect = retrieval_accuracy(img, img, pool=100)
    assert set(perfect.values()) == {1.0}
    shuffled = retrieval_accuracy(img, img[torch.arange(200).roll(1)], pool=100)
    assert shuffled["image→text R@1"] == 0.0 and shuffled["text→image R@5"] == 0.0
    with pytest.raises(ValueError, match="at least pool=100"):
        retrieval_accuracy(img[:50], img[:50])
    x = torch.nn.functional.normalize(torch.randn(500, 16), dim=-1)
    offset = torch.zeros(16)
    offset[0] = 3.0
    shifted = torch.nn.functional.normalize(x + offset, dim=-1)
    assert modality_gap(x, x)["centroid distance"] < 1e-6
    gap = modality_gap(x, shifted)
    assert gap["centroid distance"] > 0.8 and gap["variance along the gap"] > 0.3


@pytest.fixture(scope="module")
def tiny_run():
    cfg = MiniClipConfig(seed=1, channels=(4, 8, 8), text_width=16, text_heads=2, embed_dim=16)
    return cfg, train_mini_clip(cfg, steps=60, batch_size=64, lr=5e-3, pool_size=512, check_every=30, progress=False)


def test_training_is_deterministic_learns_and_records(tiny_run):
    cfg, (model, run) = tiny_run
    again, _ = train_mini_clip(cfg, steps=60, batch_size=64, lr=5e-3, pool_size=512, check_every=30, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert [c["step"] for c in run.checkpoints] == [0, 30, 60] and len(run.loss) == len(run.temperature) == 60
    first, last = run.checkpoints[0], run.checkpoints[-1]
    assert last["image→text R@5"] > first["image→text R@5"] + 0.05  # held-out retrieval improves
    assert sum(run.loss[-5:]) < sum(run.loss[:5])
    with pytest.raises(ValueError, match="larger than the picture pool"):
        train_mini_clip(cfg, steps=1, batch_size=64, pool_size=32)


def test_save_load_round_trip_and_harvest(tiny_run, tmp_path):
    cfg, (model, run) = tiny_run
    save_mini_clip(model, run, tmp_path, completeness=1.0)
    loaded = load_mini_clip(tmp_path)
    assert loaded.pretrained and loaded.extras["record"]["notes"]["completeness"] == 1.0
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.model.state_dict().values()))
    scenes = generated_scenes(6, seed=0)
    emb = harvest(loaded, scenes.images, scenes.captions, progress=False)
    assert emb.x.shape == (12, 16)
    torch.testing.assert_close(emb.x.norm(dim=1), torch.ones(12))
    with pytest.raises(FileNotFoundError, match="not a saved mini CLIP"):
        load_mini_clip(tmp_path / "nothing")
    assert not untrained_mini_clip(cfg).pretrained


def test_the_shipped_checkpoint_is_small_trained_and_recorded():
    from sae_lib.mini_clip import packaged_path

    shipped = load_mini_clip()
    size = sum(f.stat().st_size for f in packaged_path().iterdir())
    assert size < 3_000_000
    record = shipped.extras["record"]
    assert record["notes"]["total_seconds"] > 0 and record["run"]["checkpoints"][-1]["image→text R@1"] > 0.3


def test_training_schedule_is_the_library_one():
    from sae_lib.mini_clip import LR_SCHEDULE
    from sae_lib.training import lr_factor

    factors = [lr_factor(step, 100, **LR_SCHEDULE) for step in range(100)]
    assert factors[0] == pytest.approx(0.2) and factors[4] == 1.0 and factors[-1] < 0.01
    assert all(a >= b for a, b in zip(factors[4:], factors[5:]))  # warm-up, then only down
