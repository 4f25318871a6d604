"""A trained model on disk: its tensors in ``weights.safetensors`` and what rebuilds it in ``config.json``.

SAE checkpoints (:mod:`sae_lib.checkpoint`), the tiny LM (:mod:`sae_lib.tiny_lm`) and the mini CLIP
(:mod:`sae_lib.mini_clip`) are each such a directory. This module writes and reads one, so a damaged file
is the same clear :class:`CheckpointError` whichever model it holds, and hands a trained host model out
frozen.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

WEIGHTS, CONFIG = "weights.safetensors", "config.json"


class CheckpointError(ValueError):
    """A saved model that cannot be loaded as it is: unreadable, incomplete, inconsistent, or not the one asked for."""


def save_bundle(path: str | Path, tensors: Mapping[str, Tensor], config: Mapping) -> Path:
    """Write ``tensors`` (detached, on the CPU) and ``config`` (as JSON) into the directory ``path``, created
    if needed; returns the directory."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({name: t.detach().cpu().contiguous() for name, t in tensors.items()}, path / WEIGHTS)
    (path / CONFIG).write_text(json.dumps(config, indent=2))
    return path


def load_bundle(path: str | Path, what: str) -> tuple[dict[str, Tensor], dict]:
    """The tensors and the config that :func:`save_bundle` wrote to ``path``.

    A missing file is a ``FileNotFoundError`` saying that ``path`` is not ``what`` (e.g. ``"a saved SAE"``);
    a file that cannot be read is a :class:`CheckpointError` naming it."""
    path = Path(path)
    if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
        raise FileNotFoundError(f"{path} is not {what}: expected {CONFIG} and {WEIGHTS} inside it")
    try:
        config = json.loads((path / CONFIG).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path / CONFIG} is not valid JSON ({error})") from error
    if not isinstance(config, dict):
        raise CheckpointError(f"{path / CONFIG} should hold a JSON object, found {type(config).__name__}")
    try:
        tensors = load_file(path / WEIGHTS)
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path / WEIGHTS} cannot be read as safetensors ({error})") from error
    return tensors, config


def frozen(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with no trainable parameter: how a trained host model is handed out, so that
    training an SAE on it (end-to-end objectives included) can never change it."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model
