"""The run profile: one switch, read here and nowhere else, that sets the scale of every chapter.

* ``ci``: small data and few steps, so the whole book executes on 2 CPU cores in minutes.
* ``full``: settings faithful to the papers, scaled to one GPU.

Set ``SAE_BOOK_PROFILE=ci`` or ``SAE_BOOK_PROFILE=full``; left unset, it is ``full`` when a GPU
is present and ``ci`` otherwise, except in Colab, where it is always ``ci``: a Colab GPU runtime is
chosen for speed, not as a request for the papers' hours-long settings.
"""

from __future__ import annotations

import os
import sys

import torch

ENV_VAR = "SAE_BOOK_PROFILE"
PROFILES = ("ci", "full")


def current_profile() -> str:
    """The active profile name, validated (an unknown name is an error, never a silent default)."""
    raw = os.environ.get(ENV_VAR, "").strip().lower()
    if not raw:
        in_colab = "google.colab" in sys.modules
        return "full" if torch.cuda.is_available() and not in_colab else "ci"
    if raw not in PROFILES:
        raise ValueError(
            f"{ENV_VAR}={os.environ[ENV_VAR]!r} is not a known run profile; "
            f"use one of {', '.join(PROFILES)} (or leave it unset to pick by hardware)."
        )
    return raw


def by_profile(*, ci, full):
    """Pick a setting for the active profile: ``steps = by_profile(ci=2_000, full=15_000)``."""
    return ci if current_profile() == "ci" else full


def default_device() -> torch.device:
    """Where chapters put models and data: the GPU when there is one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def describe(**sizes) -> None:
    """Print the profile, the device and the sizes a chapter uses, so every output says its scale."""
    profile = current_profile()
    line = f"Run profile: {profile}  |  device: {default_device()}"
    if profile == "ci":
        line += f"  (small settings; set {ENV_VAR}=full for the papers' scale)"
    if profile == "full" and default_device().type == "cpu":
        line += "  (the papers' scale on a CPU: some chapters take hours)"
    print(line)
    for name, value in sizes.items():
        print(f"  {name:>16}: {value}")
