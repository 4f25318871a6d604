"""Saving and loading SAEs in SAELens's on-disk format, so the book's SAEs open in other tools and theirs here.

SAELens (6.x) keeps an SAE as a directory holding ``cfg.json`` (architecture, sizes, dtype, and metadata such
as the model and hook it reads) and ``sae_weights.safetensors`` (``W_enc`` of shape (d_in, d_sae), ``b_enc``,
``W_dec`` of shape (d_sae, d_in), ``b_dec``, plus what the architecture needs). ``SAE.load_from_disk(path)``
reads it. Its architectures compute the same functions as ours once two conventions are lined up:

* Our decoder uses unit-length atoms; SAELens decodes with ``W_dec`` as it is. So we save ``sae.atoms()`` as
  ``W_dec``, and when a file's rows are not unit-length we fold each row's length into the encoder: ``z_i``
  grows by the length and the atom shrinks by it, which leaves the reconstruction unchanged.
* Our encoders subtract ``b_dec`` first, which is SAELens's ``apply_b_dec_to_input=True``.

Family by family (:data:`ARCHITECTURES`):

* ReLU is ``standard``; TopK is ``topk``, with its ``k``.
* BatchTopK and Matryoshka encode with one learned threshold at inference, ``z = pre·[pre > threshold]``
  (Matryoshka's nested prefixes only shape training). SAELens saves its own BatchTopK SAEs the same way: as
  ``jumprelu``, ``z = ReLU(pre)·[pre > threshold_i]``, with the threshold repeated for every latent. A learned
  threshold is positive, so the ReLU changes nothing and the two agree exactly.
* MP is ``matching_pursuit``; :func:`_pursuit_settings` says what matches and what cannot be saved.

Our own config goes into ``metadata["sae_lib"]``, which SAELens keeps but ignores, so :func:`load_saelens`
rebuilds the same family with the same settings. A plain SAELens file loads as the family that computes the
same function, where there is one.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from .checkpoint import CheckpointError
from .saes import FAMILIES, MPSAE, SAE

WEIGHTS, CONFIG = "sae_weights.safetensors", "cfg.json"
SAELENS_VERSION = "6.0.0"
"""Written as ``metadata.sae_lens_version``: SAELens reads a file that claims no version, or one below 6, as the
older 5.x layout, so the files must say they follow the 6.x format."""

ARCHITECTURES = {"relu": "standard", "topk": "topk", "batchtopk": "jumprelu", "matryoshka": "jumprelu",
                 "mp": "matching_pursuit"}
"""The SAELens architecture each sae_lib family is saved as."""

TENSORS = {"standard": {"W_enc", "b_enc", "W_dec", "b_dec"}, "topk": {"W_enc", "b_enc", "W_dec", "b_dec"},
           "jumprelu": {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"}, "matching_pursuit": {"W_dec", "b_dec"}}
"""The weights each architecture's file holds (MP's encoder is the decoder, transposed)."""

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# ---------------------------------------------------------------- saving
def save_saelens(sae: SAE, path: str | Path, *, hook_name: str, model_name: str, dtype: str = "float32",
                 extra_metadata: dict | None = None) -> Path:
    """Write ``sae`` to the directory ``path`` (created if needed) as SAELens 6.x reads it; returns the directory.

    ``hook_name`` and ``model_name`` say where its activations come from (SAELens uses them to attach the SAE
    to a model); ``extra_metadata`` adds more, such as ``context_size`` or ``prepend_bos``. ``dtype`` is the
    weights' dtype on disk: "float32", "float16" or "bfloat16".
    """
    if not isinstance(sae, SAE):
        raise TypeError(f"save_saelens expects an SAE, got {type(sae).__name__}")
    if sae.family not in ARCHITECTURES:
        raise ValueError(f"a {type(sae).__name__} has no SAELens architecture; saved families: {sorted(ARCHITECTURES)}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    for name, value in (("hook_name", hook_name), ("model_name", model_name)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    extra = dict(extra_metadata or {})
    if clash := sorted(set(extra) & {"hook_name", "model_name", "sae_lib", "sae_lens_version"}):
        raise ValueError(f"extra_metadata may not set {clash}: save_saelens writes those itself")

    architecture = ARCHITECTURES[sae.family]
    tensors = {"W_dec": sae.atoms(), "b_dec": sae.b_dec}
    settings: dict = {}
    if architecture != "matching_pursuit":
        tensors |= {"W_enc": sae.W_enc, "b_enc": sae.b_enc}
    if architecture == "topk":
        # Our atoms have unit length, so "pick the top k by pre-activation × decoder norm" is our own rule.
        settings = {"k": sae.k, "rescale_acts_by_decoder_norm": True}
    elif architecture == "jumprelu":
        if sae.threshold < 0:
            raise ValueError(f"this {type(sae).__name__} has no inference threshold yet (it is learned in training) "
                             "and encodes by batch selection, which SAELens cannot do at inference: train it first")
        tensors["threshold"] = sae.threshold.expand(sae.n_latents)
    elif architecture == "matching_pursuit":
        settings = _pursuit_settings(sae)
    config = {
        "architecture": architecture, "d_in": sae.d_in, "d_sae": sae.n_latents, "dtype": dtype, "device": "cpu",
        "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none", **settings,
        "metadata": {"sae_lens_version": SAELENS_VERSION, "sae_lens_training_version": None,  # not trained by SAELens
                     "hook_name": hook_name, "model_name": model_name, **extra, "sae_lib": sae.config()},
    }
    text = json.dumps(config, indent=2)  # before writing anything: extra_metadata must be JSON
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({name: t.detach().to("cpu", DTYPES[dtype]).contiguous() for name, t in tensors.items()}, path / WEIGHTS)
    (path / CONFIG).write_text(text)
    return path


def _pursuit_settings(sae: MPSAE) -> dict:
    """SAELens's ``matching_pursuit`` settings that run :class:`MPSAE`'s pursuit.

    Both take the same greedy steps over the unit-length atoms (pick the atom most correlated with the
    residual, add that correlation to its code, remove it from the residual), SAELens for at most
    ``max_iterations`` steps: so ``max_iterations = k``, with SAELens's two stopping rules off
    (``residual_threshold = 0``, ``stop_on_duplicate_support = False``). Neither can stand in for ours:

    * its ``residual_threshold`` is an absolute residual norm; our ``threshold`` is a fraction of each input's
      own norm ``‖x - b_dec‖``, which no single number expresses;
    * its ``stop_on_duplicate_support`` stops a row *after* a step that picked an atom it already used (that
      step's coefficient is added); our ``stop_on_repeat`` stops it *before* that step.

    So an MPSAE that uses either rule is refused. One difference remains, at the level of rounding: a row
    whose best correlation has fallen to the noise floor (``pursuit_noise_floor`` × ``‖x - b_dec‖``, about
    3.5e-4 of it in float32, see :mod:`sae_lib.saes`) stops in sae_lib, while SAELens spends its remaining steps
    on that noise. From there SAELens only removes more of the small residual sae_lib stopped at, so the
    reconstructions differ by less than twice that residual's norm; rows that never reach the floor are
    encoded identically.
    """
    if sae.threshold is not None or sae.stop_on_repeat:
        raise ValueError("SAELens's matching pursuit cannot stop where this MPSAE does (threshold="
                         f"{sae.threshold}, stop_on_repeat={sae.stop_on_repeat}): its residual threshold is absolute, "
                         "not relative to each input's norm, and it stops one step after a repeated atom, not before. "
                         "Only an MPSAE with threshold=None and stop_on_repeat=False can be saved in SAELens's format")
    return {"max_iterations": sae.k, "residual_threshold": 0.0, "stop_on_duplicate_support": False}


# ---------------------------------------------------------------- loading
def load_saelens(path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> SAE:
    """Rebuild a sae_lib SAE from a SAELens directory, in eval mode (it is an inference format).

    A directory :func:`save_saelens` wrote comes back as the same family with the same settings. A plain
    SAELens file loads as the family that computes the same function: ``standard`` as ReLU, ``topk`` as TopK,
    a ``jumprelu`` saved from SAELens's BatchTopK or Matryoshka training as ours (a JumpReLU with one threshold
    per latent has no sae_lib family), and ``matching_pursuit`` as MP when its stopping rules are off.
    ``dtype`` (default: the file's) sets the dtype to compute in, e.g. float32 for half-precision weights.
    Anything the file holds that sae_lib cannot reproduce exactly is a :class:`CheckpointError`.
    """
    path = Path(path)
    if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
        raise FileNotFoundError(f"{path} is not a SAELens SAE: expected {CONFIG} and {WEIGHTS} inside it")
    config = _read_config(path / CONFIG)
    architecture, d_in, n_latents = config["architecture"], config["d_in"], config["d_sae"]
    tensors = _read_weights(path / WEIGHTS, architecture, d_in, n_latents)
    family, settings = _family_and_settings(config, path / CONFIG)
    try:
        sae = FAMILIES[family](d_in, n_latents, **settings)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path / CONFIG} does not describe a valid {family!r} SAE: {error}") from error
    # Rewritten in float64, then rounded once to the dtype asked for.
    weights = _unit_atom_weights(config, {name: t.double() for name, t in tensors.items()}, tensors["W_dec"].dtype,
                                 path / WEIGHTS)
    sae.to(dtype or _dtype(config["dtype"], path / CONFIG)).load_state_dict(weights)
    return sae.to(device).eval()


def _read_config(file: Path) -> dict:
    try:
        config = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{file} is not valid JSON ({error})") from error
    if not isinstance(config, dict):
        raise CheckpointError(f"{file} should hold a JSON object, found {type(config).__name__}")
    if config.get("architecture") not in TENSORS:
        raise CheckpointError(f"{file}: architecture {config.get('architecture')!r} has no sae_lib family "
                              f"(known: {sorted(TENSORS)})")
    for name in ("d_in", "d_sae"):
        if isinstance(config.get(name), bool) or not isinstance(config.get(name), int) or config[name] < 1:
            raise CheckpointError(f"{file}: {name!r} should be a positive integer, got {config.get(name)!r}")
    for name in ("normalize_activations", "reshape_activations"):
        if config.get(name, "none") != "none":
            raise CheckpointError(f"{file}: {name}={config[name]!r} changes the SAE's input in a way sae_lib does "
                                  "not reproduce; only 'none' is supported")
    config.setdefault("dtype", "float32")  # SAELens's defaults
    if not isinstance(config.setdefault("metadata", {}), dict):
        raise CheckpointError(f"{file}: 'metadata' should be a JSON object, got {config['metadata']!r}")
    _dtype(config["dtype"], file)
    return config


def _dtype(name, file: Path) -> torch.dtype:
    dtype = getattr(torch, str(name).removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise CheckpointError(f"{file}: 'dtype' should name a floating-point dtype, got {name!r}")
    return dtype


def _read_weights(file: Path, architecture: str, d_in: int, n_latents: int) -> dict[str, Tensor]:
    try:
        tensors = load_file(file)
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{file} cannot be read as safetensors ({error})") from error
    if set(tensors) != TENSORS[architecture]:
        raise CheckpointError(f"{file} does not fit a {architecture!r} SAE: tensors {sorted(tensors)}, "
                              f"expected {sorted(TENSORS[architecture])}")
    shapes = {"W_enc": (d_in, n_latents), "b_enc": (n_latents,), "W_dec": (n_latents, d_in), "b_dec": (d_in,),
              "threshold": (n_latents,)}
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != shapes[name]:
            raise CheckpointError(f"{file}: tensor {name!r} has shape {tuple(tensor.shape)}, but cfg.json's "
                                  f"d_in={d_in} and d_sae={n_latents} imply {shapes[name]}")
        if not tensor.is_floating_point() or not torch.isfinite(tensor).all():
            raise CheckpointError(f"{file}: tensor {name!r} should hold finite floating-point numbers")
    return tensors


def _family_and_settings(config: dict, file: Path) -> tuple[str, dict]:
    """The sae_lib family and constructor settings (besides the sizes) that compute what this config does."""
    architecture, metadata = config["architecture"], config["metadata"]
    own = metadata.get("sae_lib")
    if own is not None:  # written by save_saelens
        if not isinstance(own, dict) or ARCHITECTURES.get(own.get("family")) != architecture:
            raise CheckpointError(f"{file}: metadata.sae_lib should hold the config of a sae_lib family saved as "
                                  f"{architecture!r}, got {own!r}")
        settings = {name: value for name, value in own.items() if name not in ("family", "d_in", "n_latents")}
        return own["family"], settings
    if architecture == "standard":
        return "relu", {}
    if architecture == "topk":
        return "topk", {"k": config.get("k")}
    if architecture == "matching_pursuit":
        # SAELens's defaults where the file is silent: a residual threshold of 0.01, support check on, d_in steps.
        if config.get("residual_threshold", 1e-2) or config.get("stop_on_duplicate_support", True):
            raise CheckpointError(f"{file}: this matching-pursuit SAE stops on SAELens's residual_threshold or "
                                  "stop_on_duplicate_support rule, which sae_lib's MPSAE cannot reproduce (see "
                                  "sae_lib.saelens_format._pursuit_settings); only files with both off can load")
        return "mp", {"k": config.get("max_iterations") or config["d_in"]}
    training = metadata.get("training_architecture")
    details = metadata.get("training_architecture_details") or {}
    if training == "batchtopk":
        return "batchtopk", {"k": details.get("k")}
    if training == "matryoshka_batchtopk":
        return "matryoshka", {"k": details.get("k"), "prefixes": details.get("matryoshka_widths")}
    raise CheckpointError(f"{file}: a JumpReLU SAE not trained as BatchTopK or Matryoshka "
                          f"(training_architecture={training!r}) has no sae_lib family")


def _unit_atom_weights(config: dict, t: dict[str, Tensor], file_dtype: torch.dtype, file: Path) -> dict[str, Tensor]:
    """The file's weights (in float64) rewritten for a sae_lib SAE: ``b_dec`` subtracted before encoding, unit atoms.

    Folding a row's length ``s`` into the encoder multiplies that latent's pre-activation by ``s`` and divides its
    atom by ``s``: the same reconstruction. ReLU commutes with that scaling, and so does a threshold scaled
    with it; a rule that compares latents with each other (TopK without SAELens's rescaling by the row lengths,
    one threshold shared by all latents) only does if every ``s`` is the same.
    """
    architecture = config["architecture"]
    if not config.get("apply_b_dec_to_input", True):
        # SAELens then encodes x itself; ours encodes x - b_dec, so give b_dec @ W_enc back to b_enc.
        if architecture == "matching_pursuit":
            t["b_dec"] = torch.zeros_like(t["b_dec"])  # and tied pursuit ignores b_dec altogether
        else:
            t["b_enc"] = t["b_enc"] + t["b_dec"] @ t["W_enc"]
    lengths = t["W_dec"].norm(dim=1)
    if not (lengths > 0).all():
        raise CheckpointError(f"{file}: some rows of 'W_dec' are zero, so they have no direction as atoms")
    # Far above the file's rounding (rows saved as unit length come back within it), far below real differences.
    tolerance = torch.finfo(file_dtype).eps ** 0.5
    same_lengths = bool(torch.allclose(lengths, lengths.mean().expand_as(lengths), rtol=tolerance, atol=0))
    out = {"W_dec": t["W_dec"] / lengths[:, None], "b_dec": t["b_dec"]}
    if architecture == "matching_pursuit":
        if not torch.allclose(lengths, torch.ones_like(lengths), rtol=0, atol=tolerance):
            raise CheckpointError(f"{file}: SAELens's pursuit uses the rows of 'W_dec' as they are, and some "
                                  "are not unit-length, so its steps are not matching pursuit over unit atoms")
        return out
    if architecture == "topk" and not config.get("rescale_acts_by_decoder_norm", False) and not same_lengths:
        raise CheckpointError(f"{file}: this TopK SAE picks its top k by raw pre-activation while its "
                              "'W_dec' rows differ in length; sae_lib's TopK picks by contribution (unit atoms)")
    out |= {"W_enc": t["W_enc"] * lengths, "b_enc": t["b_enc"] * lengths}
    if architecture == "jumprelu":
        threshold = t["threshold"] * lengths
        if not torch.allclose(threshold, threshold.mean().expand_as(threshold), rtol=tolerance, atol=0) \
                or threshold.mean() < 0:
            raise CheckpointError(f"{file}: this JumpReLU's thresholds (scaled by the decoder's row lengths) "
                                  "are not one shared non-negative number, which sae_lib's BatchTopK and Matryoshka "
                                  "need")
        out["threshold"] = threshold.mean()
    return out
