"""The shipped real-scale results and SAEs: damaged files give errors that name the file and the script."""

import json

import pytest
import torch

from sae_lib import TopKSAE, real_scale
from sae_lib.saelens_format import save_saelens


@pytest.fixture
def assets(tmp_path, monkeypatch):
    monkeypatch.setattr(real_scale, "assets_dir", lambda: tmp_path)
    return tmp_path


def test_missing_files_name_the_script(assets):
    with pytest.raises(real_scale.ShippedAssetError, match=r"results\.jsonl is missing.*real_scale_study\.py"):
        real_scale.load_results()
    with pytest.raises(real_scale.ShippedAssetError, match=r"harvest\.json is missing.*real_scale_study\.py"):
        real_scale.harvest_info()
    with pytest.raises(real_scale.ShippedAssetError, match=r"topk-k32 is missing.*real_scale_study\.py"):
        real_scale.load_shipped("topk-k32")
    with pytest.raises(ValueError, match="not one of the shipped SAEs"):
        real_scale.load_shipped("topk-k7")
    assert real_scale.shipped_names() == []


def test_chapter_7s_study_has_its_own_files_and_script(assets):
    with pytest.raises(real_scale.ShippedAssetError, match=r"e2e_results\.jsonl is missing.*e2e_study\.py"):
        real_scale.load_results("e2e")
    with pytest.raises(real_scale.ShippedAssetError, match=r"e2e-l0-32 is missing.*e2e_study\.py"):
        real_scale.load_shipped("e2e-l0-32")
    with pytest.raises(ValueError, match="study must be"):
        real_scale.load_results("local")
    (assets / "e2e_results.jsonl").write_text('{"name": "e2e-l0-32"}\n{"na')
    with pytest.raises(real_scale.ShippedAssetError, match=r"line 2.*e2e_study\.py"):
        real_scale.load_results("e2e")
    assert real_scale.shipped_names("e2e") == []
    names = [real_scale.e2e_name(kind, k) for kind, k in real_scale.E2E_PLAN]
    assert len(set(names)) == len(names) and "kl-ft-relu-l0-32" in names and "e2e+ds-l0-20" in names
    assert set(real_scale.E2E_SHIPPED) <= set(names)


def test_a_truncated_results_file_is_refused(assets):
    line = json.dumps({"name": "topk-k32", "fvu": 0.2})
    (assets / "results.jsonl").write_text(line + "\n" + line[:10] + "\n")
    with pytest.raises(real_scale.ShippedAssetError, match=r"line 2.*truncated or corrupt.*real_scale_study"):
        real_scale.load_results()
    (assets / "results.jsonl").write_text(line + "\n")
    assert real_scale.load_results() == [{"name": "topk-k32", "fvu": 0.2}]


def test_a_shipped_sae_loads_in_float32_and_a_corrupt_one_is_named(assets):
    sae = TopKSAE(16, 64, k=4, seed=0)
    folder = assets / "saes" / "topk-k32"
    save_saelens(sae, folder, hook_name="blocks.0.hook_resid_pre", model_name="test", dtype="float16")
    loaded = real_scale.load_shipped("topk-k32")
    assert loaded.W_dec.dtype == torch.float32 and real_scale.shipped_names() == ["topk-k32"]
    x = torch.randn(5, 16)
    torch.testing.assert_close(loaded(x)[0], sae(x)[0], atol=2e-2, rtol=2e-2)
    weights = folder / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    with pytest.raises(real_scale.ShippedAssetError, match=r"sae_weights\.safetensors.*real_scale_study\.py"):
        real_scale.load_shipped("topk-k32")


@pytest.fixture
def absorption_assets(tmp_path, monkeypatch):
    monkeypatch.setattr(real_scale, "absorption_dir", lambda: tmp_path)
    return tmp_path


def _write_words(folder, n_train=3, n_test=2):
    from safetensors.torch import save_file

    tensors = {}
    for side, n in (("train", n_train), ("test", n_test)):
        tensors[f"{side}_x"] = torch.randn(n, 4).half()
        tensors[f"{side}_labels"] = torch.arange(n)
        tensors[f"{side}_token_ids"] = torch.arange(n) + 100
    save_file(tensors, str(folder / "words.safetensors"))
    info = {"train_words": [" ab", " bc", " cd"], "test_words": [" de", " ef"]}
    (folder / "words.json").write_text(json.dumps(info))


def test_chapter_9_words_load_and_damage_is_named(absorption_assets):
    with pytest.raises(real_scale.ShippedAssetError, match=r"words\.json is missing.*absorption_study\.py"):
        real_scale.load_words()
    with pytest.raises(real_scale.ShippedAssetError, match=r"proxy\.json is missing.*absorption_study\.py"):
        real_scale.load_proxy()
    _write_words(absorption_assets)
    words = real_scale.load_words()
    assert words["train"]["x"].dtype == torch.float32 and words["test"]["words"] == [" de", " ef"]
    _write_words(absorption_assets, n_test=3)  # rows and words from different runs
    with pytest.raises(real_scale.ShippedAssetError, match=r"3 test rows but words\.json names 2"):
        real_scale.load_words()
    path = absorption_assets / "words.safetensors"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(real_scale.ShippedAssetError, match=r"words\.safetensors is truncated or corrupt"):
        real_scale.load_words()
    (absorption_assets / "proxy.json").write_text('{"saes": ')
    with pytest.raises(real_scale.ShippedAssetError, match=r"proxy\.json is truncated or corrupt"):
        real_scale.load_proxy()
