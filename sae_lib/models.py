"""The contract every pretrained-model loader in the book follows (GPT-2, CLIP, ...).

Readers with internet get real weights. Where the model hub is unreachable (this project's CI, an
offline laptop) a loader may fall back to a *stand-in*: the same architecture with random weights.
A stand-in is never passed off as the real thing: the loader says whether the weights are
pretrained, prints a banner no reader can miss, and refuses outright when stand-ins are forbidden
with ``SAE_BOOK_NO_STANDINS=1`` (set it when you want results, not a dry run).
"""

from __future__ import annotations

import os
import socket
import textwrap
from dataclasses import dataclass
from typing import Any

NO_STANDINS_ENV = "SAE_BOOK_NO_STANDINS"
MECHANICS_ONLY_ENV = "SAE_BOOK_MECHANICS_ONLY"
HUB_HOST = "huggingface.co"


class StandInForbiddenError(RuntimeError):
    """Raised when pretrained weights are unavailable and stand-ins are forbidden."""


@dataclass
class LoadedModel:
    """A model as a loader returns it, with the one flag chapters must branch on."""

    model: Any
    name: str  # e.g. "gpt2" or "ViT-B-32 (laion2b_s34b_b79k)"
    pretrained: bool  # False for a random-weight stand-in
    extras: dict  # loader-specific: tokenizer, preprocess, config notes, ...


def standins_allowed() -> bool:
    return os.environ.get(NO_STANDINS_ENV, "").strip().lower() not in {"1", "true", "yes"}


def mechanics_only() -> bool:
    """True when the weights a loader finds are known to mean nothing although they *look* pretrained.

    A loader cannot tell planted random weights from real ones: the tests that plant a fake local
    Hugging Face cache (so that CI runs the pretrained branch of a chapter offline) set
    ``SAE_BOOK_MECHANICS_ONLY=1``, and chapters then assert only what holds on any weights."""
    return os.environ.get(MECHANICS_ONLY_ENV, "").strip().lower() in {"1", "true", "yes"}


def fall_back_to_standin(name: str, reason: str) -> None:
    """Call when pretrained weights could not be loaded: raise if stand-ins are forbidden, else
    print the banner. ``reason`` is the underlying error, shown so the reader can fix it."""
    if not standins_allowed():
        raise StandInForbiddenError(
            f"could not load pretrained {name} ({reason}), and {NO_STANDINS_ENV} forbids a stand-in. "
            f"Connect to the internet (the Hugging Face hub), or unset {NO_STANDINS_ENV} for a dry run."
        )
    bar = "!" * 64
    reason_lines = textwrap.wrap(f"Reason: {reason[:300]}", width=58)
    print("\n".join([
        bar,
        f"!!  STAND-IN MODEL: pretrained {name} could not be loaded.",
        "!!  This chapter uses the same architecture with",
        "!!  RANDOM WEIGHTS. Every number below about what the",
        "!!  model represents is meaningless; only the mechanics",
        "!!  are checked.",
        *(f"!!  {line}" for line in reason_lines),
        bar,
    ]))


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE=1`` asks every Hugging Face client to use its local cache only."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def hub_unreachable_reason(timeout: float = 3.0) -> str | None:
    """Why the Hugging Face hub cannot be reached, or None if it can (or if ``HF_HUB_OFFLINE=1`` asks
    for the local cache, which needs no network). The one reachability check of the book: every
    loader calls it first, because without it an offline machine waits through the hub client's
    retries (about half a minute per file) before failing. Code that needs the hub itself, not
    the cache (streaming a data set), also checks :func:`hub_offline`."""
    if hub_offline():
        return None
    try:
        socket.create_connection((HUB_HOST, 443), timeout=timeout).close()
    except OSError as error:
        return f"{HUB_HOST} is unreachable ({error})"
    return None
