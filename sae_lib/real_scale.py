"""The real-scale study of Part III: its settings, and the results and SAEs it shipped.

``scripts/real_scale_study.py`` trains every SAE family once on about two million tokens of SmolLM2
activations (hours on a CPU), and ships what chapters 6-9 analyse in ``sae_lib/assets/real_scale/``:

* ``results.jsonl``: one line per SAE, with its settings, training budget, runtime and machine, and
  its held-out scores (FVU, L0, dead latents, CE-loss increase, CE recovered);
* ``harvest.json``: how the activation store was made (tokens, throughput, attention sinks dropped);
* ``saes/<name>/``: the chapters' SAEs in SAELens's on-disk format (``cfg.json`` +
  ``sae_weights.safetensors``, float16), loaded here with :func:`load_shipped`.

``scripts/e2e_study.py`` adds chapter 7's end-to-end SAEs at the same hook, on the same text:
``e2e_results.jsonl`` (same scores, same held-out text) and its shipped SAEs in ``saes/``.

The settings live here, not in the script, so that the chapters and the script cannot disagree.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

HOOK = "blocks.10.hook_resid_post"  # the output of block 10: where EleutherAI's `layers.10` SAEs read
MODEL = "SmolLM2-135M-Instruct"
SEQ_LEN = 256
N_LATENTS = 4_608  # expansion 8 over d_model = 576
KS = (16, 32, 64)
SOURCES = ("python-docs", "kjv-bible", "fortunes", "gcide")
SHIPPED = ("topk-k32", "relu-l0-32", "mp-k32", "batchtopk-k32", "matryoshka-k32")
# Chapter 7's study, most needed first: (kind, target L0). The fine-tunes start from the local
# relu-l0-<L0>. λ is steered to the target for every step, except in the first three SAEs trained
# (kl-ft, e2e and e2e+ds at 32: the first 70%); kl-ft-hold is kl-ft steered to the end. The first
# five missed their targets (e2e-l0-32 ended at L0 67, e2e-l0-24 at 14), so the rest aim inside the
# local SAEs' L0 range (16 to 65) and are steered by the damped rule (E2E_STEERING_FROM).
E2E_PLAN = (("kl-ft", 32), ("e2e", 32), ("kl-ft-hold", 32), ("e2e+ds", 32), ("e2e", 24), ("e2e", 40),
            ("e2e+ds", 24), ("e2e", 20), ("e2e+ds", 20), ("kl-ft-hold", 16))
E2E_STEERING_FROM = 5  # pieces from this index of E2E_PLAN on: TargetL0(**training.DAMPED_STEERING)
E2E_SHIPPED = ("e2e-l0-32",)
E2E_FINETUNE_LR = 3e-4  # a tenth of the local SAEs' rate: a fine-tune starts from a trained SAE
REMAKE = "python scripts/real_scale_study.py"
REMAKE_E2E = "python scripts/e2e_study.py"
REMAKE_ABSORPTION = "python scripts/absorption_study.py"


class ShippedAssetError(RuntimeError):
    """A shipped result or SAE of the real-scale study is missing, truncated or corrupt."""


def e2e_name(kind: str, target_l0: int) -> str:
    """The name of one SAE of chapter 7's study: ``e2e-l0-32``, ``e2e+ds-l0-16``, ``kl-ft-relu-l0-32``."""
    return f"{kind}-relu-l0-{target_l0}" if kind.startswith("kl-ft") else f"{kind}-l0-{target_l0}"


def assets_dir() -> Path:
    return Path(str(resources.files("sae_lib"))) / "assets" / "real_scale"


def absorption_dir() -> Path:
    """Chapter 9's shipped data (``scripts/absorption_study.py``): first-letter word activations at
    :data:`HOOK` and the detection proxy of the shipped SAEs."""
    return Path(str(resources.files("sae_lib"))) / "assets" / "absorption"


def load_results(study: str = "real_scale") -> list[dict]:
    """Every finished SAE of a study, one dict per line of its results file, in the order trained:
    ``"real_scale"`` (``results.jsonl``) or ``"e2e"`` (``e2e_results.jsonl``, chapter 7's)."""
    if study not in ("real_scale", "e2e"):
        raise ValueError(f"study must be 'real_scale' or 'e2e', got {study!r}")
    path = assets_dir() / ("results.jsonl" if study == "real_scale" else "e2e_results.jsonl")
    remake = REMAKE if study == "real_scale" else REMAKE_E2E
    if not path.is_file():
        raise ShippedAssetError(f"{path} is missing; `{remake}` makes it")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ShippedAssetError(f"{path}, line {number}, is not valid JSON ({error}): the file is truncated "
                                    f"or corrupt; restore it from git or rerun `{remake}`") from error
    return records


def harvest_info() -> dict:
    """How each activation store was harvested (``harvest.json``)."""
    return _read_json(assets_dir() / "harvest.json", REMAKE)


def shipped_names(study: str = "real_scale") -> list[str]:
    """The chapters' SAEs of a study (``"real_scale"`` or ``"e2e"``) that are in the repository now."""
    names = {"real_scale": SHIPPED, "e2e": E2E_SHIPPED}[study]
    folder = assets_dir() / "saes"
    return [name for name in names if (folder / name / "cfg.json").is_file()]


def load_shipped(name: str, *, device: str = "cpu"):
    """One of the shipped SAEs, as a ``sae_lib`` SAE in float32 (read from its float16 SAELens-format folder)."""
    import torch

    from .checkpoint import CheckpointError
    from .saelens_format import load_saelens

    if name not in SHIPPED + E2E_SHIPPED:
        raise ValueError(f"{name!r} is not one of the shipped SAEs {SHIPPED + E2E_SHIPPED}")
    remake = REMAKE if name in SHIPPED else REMAKE_E2E
    path = assets_dir() / "saes" / name
    if not path.is_dir():
        raise ShippedAssetError(f"the shipped SAE {path} is missing; `{remake}` makes it")
    try:
        return load_saelens(path, device=device, dtype=torch.float32)
    except (CheckpointError, FileNotFoundError) as error:
        raise ShippedAssetError(f"{error} (the shipped SAE {name!r} comes from `{remake}`)") from error


def _read_json(path: Path, remake: str):
    if not path.is_file():
        raise ShippedAssetError(f"{path} is missing; `{remake}` makes it")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ShippedAssetError(f"{path} is truncated or corrupt ({error}); restore it from git or "
                                f"rerun `{remake}`") from error


def load_words() -> dict:
    """The first-letter prompts' activations (float32) with their words and how they were made:
    ``{"train": {"x", "labels", "token_ids", "words"}, "test": {...}, "info": {...}}``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    info = _read_json(absorption_dir() / "words.json", REMAKE_ABSORPTION)
    path = absorption_dir() / "words.safetensors"
    if not path.is_file():
        raise ShippedAssetError(f"{path} is missing; `{REMAKE_ABSORPTION}` makes it")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ShippedAssetError(f"{path} is truncated or corrupt ({error}); restore it from git or "
                                f"rerun `{REMAKE_ABSORPTION}`") from error
    data = {"info": info}
    for side in ("train", "test"):
        words = info[f"{side}_words"]
        part = {key: tensors[f"{side}_{key}"] for key in ("x", "labels", "token_ids")}
        if len(part["x"]) != len(words):
            raise ShippedAssetError(f"{path} holds {len(part['x'])} {side} rows but words.json names "
                                    f"{len(words)} words: the two files are from different runs; "
                                    f"rerun `{REMAKE_ABSORPTION}`")
        data[side] = {**part, "x": part["x"].float(), "words": words}
    return data


def load_proxy() -> dict:
    """The detection proxy of every shipped SAE on the study's text (``proxy.json``)."""
    return _read_json(absorption_dir() / "proxy.json", REMAKE_ABSORPTION)
