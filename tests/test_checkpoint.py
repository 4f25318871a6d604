import json

import pytest
import torch

from sae_lib import MPSAE, ReLUSAE, TopKSAE, load_sae, save_sae, train_sae


@pytest.mark.parametrize("sae", [ReLUSAE(6, 20, l1_coeff=0.02, seed=1), TopKSAE(6, 20, 3, k_aux=5, seed=1), MPSAE(6, 20, 4, seed=1)],
                         ids=["relu", "topk", "mp"])
def test_exact_round_trip(sae, tmp_path, toy_data):
    data = toy_data.x[:, :6].contiguous()
    train_sae(sae, data, steps=20, batch_size=64, lr=1e-2, seed=0, progress=False)
    save_sae(sae, tmp_path / "ckpt")
    loaded = load_sae(tmp_path / "ckpt", family=type(sae), d_in=6, n_latents=20)
    assert type(loaded) is type(sae) and loaded.config() == sae.config()
    for (name, p), q in zip(sae.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(p, q), name
    x = torch.randn(50, 6)
    assert torch.equal(sae(x)[1], loaded(x)[1])


def test_loading_the_wrong_family_or_shape_is_an_error(tmp_path):
    save_sae(TopKSAE(6, 20, 3), tmp_path / "topk")
    with pytest.raises(ValueError, match="holds a 'topk' SAE.*not 'mp'"):
        load_sae(tmp_path / "topk", family=MPSAE)
    with pytest.raises(ValueError, match="d_in=6, expected d_in=7"):
        load_sae(tmp_path / "topk", d_in=7)
    with pytest.raises(ValueError, match="n_latents=20, expected n_latents=40"):
        load_sae(tmp_path / "topk", n_latents=40)


def test_weights_that_do_not_fit_the_config_are_an_error(tmp_path):
    save_sae(TopKSAE(6, 20, 3), tmp_path / "a")
    save_sae(TopKSAE(6, 30, 3), tmp_path / "b")
    (tmp_path / "b" / "weights.safetensors").replace(tmp_path / "a" / "weights.safetensors")
    with pytest.raises(ValueError, match="tensor 'W_dec' has shape"):
        load_sae(tmp_path / "a")
    save_sae(MPSAE(6, 20, 3), tmp_path / "mp")
    (tmp_path / "mp" / "weights.safetensors").replace(tmp_path / "a" / "weights.safetensors")
    with pytest.raises(ValueError, match="does not fit a 'topk' SAE"):
        load_sae(tmp_path / "a")


def test_missing_or_foreign_checkpoints_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a saved SAE"):
        load_sae(tmp_path)
    save_sae(MPSAE(6, 20, 3), tmp_path / "x")
    config = json.loads((tmp_path / "x" / "config.json").read_text())
    (tmp_path / "x" / "config.json").write_text(json.dumps({**config, "family": "gated"}))
    with pytest.raises(ValueError, match="unknown family 'gated'"):
        load_sae(tmp_path / "x")


# ---------------------------------------------------------------- audit (issue 14): one clear error, dtype and frozen flags kept
def _corrupt_weights(path):
    (path / "weights.safetensors").write_bytes(b"not a safetensors file")


def _corrupt_json(path):
    (path / "config.json").write_text("{not json")


def _edit_config(change):
    def edit(path):
        config = json.loads((path / "config.json").read_text())
        change(config)
        (path / "config.json").write_text(json.dumps(config))
    return edit


def _nan_weights(path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(path / "weights.safetensors")
    tensors["W_dec"][0, 0] = float("nan")
    save_file(tensors, path / "weights.safetensors")


@pytest.mark.parametrize("damage, message", [
    (_corrupt_weights, r"weights.safetensors.*cannot be read"),
    (_corrupt_json, r"config.json.*not valid JSON"),
    (_edit_config(lambda c: c.pop("k")), r"config.json.*missing.*'k'"),
    (_edit_config(lambda c: c.update(colour="red")), r"config.json.*unexpected.*'colour'"),
    (_edit_config(lambda c: c.update(k=0)), r"config.json.*k must be an integer"),
    (_nan_weights, r"weights.safetensors.*'W_dec'.*NaN or infinite"),
], ids=["weights", "json", "missing", "extra", "bad-value", "nan"])
def test_a_damaged_checkpoint_is_one_clear_error_naming_the_path(tmp_path, damage, message):
    from sae_lib.checkpoint import CheckpointError

    save_sae(TopKSAE(6, 20, 3), tmp_path / "ckpt")
    damage(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match=message) as error:
        load_sae(tmp_path / "ckpt")
    assert str(tmp_path / "ckpt") in str(error.value)


def test_dtype_and_frozen_parameters_survive_a_round_trip(tmp_path):
    sae = ReLUSAE(6, 20, seed=0).double()
    sae.b_dec.requires_grad_(False)
    save_sae(sae, tmp_path / "ckpt")
    loaded = load_sae(tmp_path / "ckpt")
    assert loaded.W_dec.dtype == torch.float64 and loaded.W_enc.dtype == torch.float64
    assert not loaded.b_dec.requires_grad and loaded.W_dec.requires_grad and loaded.W_enc.requires_grad
    for (name, p), q in zip(sae.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(p, q), name
