"""Saving and loading a trained SAE: safetensors weights plus a JSON config (a :mod:`~sae_lib.bundle`), any family.

The config holds the constructor's arguments, the weights' dtype and which parameters were frozen,
so :func:`load_sae` rebuilds the SAE exactly as it was saved. Anything wrong with a checkpoint is a
:class:`CheckpointError` that names the file and the problem.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch

from .bundle import CONFIG, WEIGHTS, CheckpointError, load_bundle, save_bundle
from .saes import FAMILIES, SAE

FORMAT_VERSION = 2  # 2: the config also records "dtype" and "frozen"


def save_sae(sae: SAE, path: str | Path, format: str = "sae_lib", **saelens_options) -> Path:
    """Write ``sae`` to the directory ``path`` (created if needed); returns the directory.

    ``format="saelens"`` writes SAELens's format instead, for other tools: ``saelens_options`` (``hook_name``
    and ``model_name`` at least) go to :func:`sae_lib.saelens_format.save_saelens`."""
    if format == "saelens":
        from .saelens_format import save_saelens  # imported here: that module builds on this one

        return save_saelens(sae, path, **saelens_options)
    if format != "sae_lib":
        raise ValueError(f"format must be 'sae_lib' (the default) or 'saelens', got {format!r}")
    if saelens_options:
        raise TypeError(f"save_sae got {sorted(saelens_options)}, which only format='saelens' takes")
    if not isinstance(sae, SAE):
        raise TypeError(f"save_sae expects an SAE, got {type(sae).__name__}")
    frozen = [name for name, p in sae.named_parameters() if not p.requires_grad]
    dtype = str(sae.W_dec.dtype).removeprefix("torch.")
    config = {"format_version": FORMAT_VERSION, "dtype": dtype, "frozen": frozen, **sae.config()}
    return save_bundle(path, sae.state_dict(), config)


def _constructor_arguments(cls: type[SAE]) -> set[str]:
    """The settings a family's config must hold: its constructor's arguments, except the seed, and those
    of the parent class it passes ``**settings`` on to (BatchTopK builds on TopK, Matryoshka on both)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is SAE.__mro__[1]:
            continue
        parameters = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return names - {"self", "seed"}


def load_sae(
    path: str | Path,
    *,
    family: str | type[SAE] | None = None,
    d_in: int | None = None,
    n_latents: int | None = None,
    device: str | torch.device = "cpu",
) -> SAE:
    """Rebuild the SAE saved at ``path`` exactly: family, settings, weights, dtype and frozen parameters.

    ``family``, ``d_in`` and ``n_latents``, when given, are checked against the checkpoint, so loading
    the wrong one is an error, not a surprise. A damaged checkpoint raises :class:`CheckpointError`.
    """
    path = Path(path)
    tensors, config = load_bundle(path, "a saved SAE")
    if config.pop("format_version", None) != FORMAT_VERSION:
        raise CheckpointError(f"{path / CONFIG} was written by an incompatible version of sae_lib "
                              f"(this one reads format {FORMAT_VERSION}); save the SAE again")
    saved_family, dtype_name, frozen = config.pop("family", None), config.pop("dtype", None), config.pop("frozen", None)
    if saved_family not in FAMILIES:
        raise CheckpointError(f"{path} holds an SAE of unknown family {saved_family!r}; known: {sorted(FAMILIES)}")
    dtype = getattr(torch, str(dtype_name), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise CheckpointError(f"{path / CONFIG}: 'dtype' should name a floating-point torch dtype, got {dtype_name!r}")
    cls = FAMILIES[saved_family]
    expected = _constructor_arguments(cls)
    if missing := sorted(expected - set(config)):
        raise CheckpointError(f"{path / CONFIG} is missing the setting(s) {missing} of a {saved_family!r} SAE")
    if extra := sorted(set(config) - expected):
        raise CheckpointError(f"{path / CONFIG} has unexpected setting(s) {extra} for a {saved_family!r} SAE")
    wanted = family.family if isinstance(family, type) else family
    if wanted is not None and wanted != saved_family:
        raise CheckpointError(f"{path} holds a {saved_family!r} SAE ({cls.__name__}), not {wanted!r}")
    for name, value in (("d_in", d_in), ("n_latents", n_latents)):
        if value is not None and config[name] != value:
            raise CheckpointError(f"{path} holds an SAE with {name}={config[name]}, expected {name}={value}")
    try:
        sae = cls(**config).to(dtype)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path / CONFIG} does not describe a valid {saved_family!r} SAE: {error}") from error
    own = sae.state_dict()
    if set(tensors) != set(own):
        raise CheckpointError(
            f"{path / WEIGHTS} does not fit a {saved_family!r} SAE: tensors {sorted(tensors)} vs expected {sorted(own)}"
        )
    for name, tensor in tensors.items():
        if tensor.shape != own[name].shape:
            raise CheckpointError(f"{path / WEIGHTS}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                                  f"but the config implies {tuple(own[name].shape)}")
        if tensor.dtype != dtype:
            raise CheckpointError(f"{path / WEIGHTS}: tensor {name!r} is {tensor.dtype}, but the config says {dtype}")
        if not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path / WEIGHTS}: tensor {name!r} holds NaN or infinite values")
    if not isinstance(frozen, list) or not all(isinstance(n, str) and n in own for n in frozen):
        raise CheckpointError(f"{path / CONFIG}: 'frozen' should list parameter names, got {frozen!r}")
    sae.load_state_dict(tensors)
    for name, parameter in sae.named_parameters():
        parameter.requires_grad_(name not in frozen)
    return sae.to(device)
