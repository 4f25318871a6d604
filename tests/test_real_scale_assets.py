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
