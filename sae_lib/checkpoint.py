"""Saving and loading a trained SAE: safetensors weights plus a JSON config, any family."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .saes import FAMILIES, SAE

FORMAT_VERSION = 1
WEIGHTS, CONFIG = "weights.safetensors", "config.json"


def save_sae(sae: SAE, path: str | Path) -> Path:
    """Write ``sae`` to the directory ``path`` (created if needed); returns the directory."""
    if not isinstance(sae, SAE):
        raise TypeError(f"save_sae expects an SAE, got {type(sae).__name__}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().cpu().contiguous() for name, t in sae.state_dict().items()}
    save_file(tensors, path / WEIGHTS)
    (path / CONFIG).write_text(json.dumps({"format_version": FORMAT_VERSION, **sae.config()}, indent=2))
    return path


def load_sae(
    path: str | Path,
    *,
    family: str | type[SAE] | None = None,
    d_in: int | None = None,
    n_latents: int | None = None,
    device: str | torch.device = "cpu",
) -> SAE:
    """Rebuild the SAE saved at ``path`` exactly. ``family``, ``d_in`` and ``n_latents``, when given,
    are checked against the checkpoint, so loading the wrong one is an error, not a surprise."""
    path = Path(path)
    if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
        raise FileNotFoundError(f"{path} is not a saved SAE: expected {CONFIG} and {WEIGHTS} inside it")
    config = json.loads((path / CONFIG).read_text())
    if config.pop("format_version", None) != FORMAT_VERSION:
        raise ValueError(f"{path / CONFIG} was written by an incompatible version of sae_lib")
    saved_family = config.pop("family", None)
    if saved_family not in FAMILIES:
        raise ValueError(f"{path} holds an SAE of unknown family {saved_family!r}; known: {sorted(FAMILIES)}")
    wanted = family.family if isinstance(family, type) else family
    if wanted is not None and wanted != saved_family:
        raise ValueError(f"{path} holds a {saved_family!r} SAE ({FAMILIES[saved_family].__name__}), not {wanted!r}")
    for name, expected in (("d_in", d_in), ("n_latents", n_latents)):
        if expected is not None and config[name] != expected:
            raise ValueError(f"{path} holds an SAE with {name}={config[name]}, expected {name}={expected}")

    sae = FAMILIES[saved_family](**config)
    tensors = load_file(path / WEIGHTS)
    own = sae.state_dict()
    if set(tensors) != set(own):
        raise ValueError(
            f"{path / WEIGHTS} does not fit a {saved_family!r} SAE: tensors {sorted(tensors)} vs expected {sorted(own)}"
        )
    for name, tensor in tensors.items():
        if tensor.shape != own[name].shape:
            raise ValueError(
                f"{path / WEIGHTS}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                f"but the config implies {tuple(own[name].shape)}"
            )
    sae.load_state_dict(tensors)
    return sae.to(device)
