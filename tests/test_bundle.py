"""One on-disk layout for every trained model: weights + config round trip, clear errors, frozen hosts."""

import json

import pytest
import torch
from torch import nn

from sae_lib.bundle import CheckpointError, frozen, load_bundle, save_bundle


def test_round_trip_keeps_tensors_and_config(tmp_path):
    tensors = {"a": torch.arange(6.0).reshape(2, 3).T, "b": torch.ones(2, dtype=torch.float64, requires_grad=True)}
    path = save_bundle(tmp_path / "m", tensors, {"name": "m", "sizes": [2, 3]})
    loaded, config = load_bundle(path, "a saved model")
    assert config == {"name": "m", "sizes": [2, 3]}
    assert all(torch.equal(loaded[k], tensors[k].detach()) and loaded[k].dtype == tensors[k].dtype for k in tensors)


def test_missing_or_damaged_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a saved tiny LM"):
        load_bundle(tmp_path, "a saved tiny LM")
    path = save_bundle(tmp_path / "m", {"a": torch.zeros(1)}, {})
    (path / "config.json").write_text(json.dumps([1, 2]))
    with pytest.raises(CheckpointError, match="config.json should hold a JSON object"):
        load_bundle(path, "a saved model")
    (path / "config.json").write_text("{}")
    (path / "weights.safetensors").write_bytes(b"nothing")
    with pytest.raises(CheckpointError, match="weights.safetensors cannot be read"):
        load_bundle(path, "a saved model")


def test_frozen_hands_out_an_eval_model_with_nothing_to_train():
    model = frozen(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)))
    assert not model.training and not any(p.requires_grad for p in model.parameters())
