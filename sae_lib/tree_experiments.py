"""The experiments of chapters 4 and 5, defined once for the chapters and for ``scripts/full_profile_ch45.py``.

A chapter runs them at its run profile's scale (:func:`tree_scale`); the script runs the ``full`` scale
once, piece by piece, into the results that ship (:mod:`sae_lib.full_profile`). Both read what is defined
here, so the shipped numbers come from the chapters' own experiments, only longer. A *variant* maps a name
to :func:`~sae_lib.tree_sae` settings; the ReLU variant's L1 weight comes from a bisection at run time
(:func:`with_l1`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .hierarchy import Concept, ConceptTree
from .profile import current_profile

# Chapter 4: the one-shot families on the paper's tree.
CH4_CORRELATION = 0.3  # cosine between sibling directions; chapter 4 also tunes the ReLU's L1 weight here
CH4_VARIANTS = {"relu": {}, "batchtopk": {}, "matryoshka": {}, "topk": {}}

# Chapter 5: matching pursuit beside them.
CH5_TUNE_CORRELATION = 0.0  # chapter 5 tunes the ReLU's L1 weight once, at ρ = 0, and reuses it
SWEEP_CORRELATIONS = [0.0, 0.3, 0.6, 0.9]
SWEEP_VARIANTS = {"relu": {}, "mp": {}}
MP_K2 = {"family": "mp", "k": 2}  # the sweep's MP at ρ = 0 with no spare step, to show that k = 2 can stall
GRID_CORRELATION = 0.0  # the absorption grid varies the children's magnitudes only
GRID_VARIANTS = {"relu": {}, "batchtopk": {}, "matryoshka": {}, "mp": {}, "topk": {}}
ADAPTIVE_CORRELATION = 0.3
ADAPTIVE_VARIANTS = {"relu": {}, "topk": {"k": 2}, "mp": {"k": 2}}
INFERENCE_KS = list(range(1, 21))  # the inference budgets of the adaptive-sparsity curves
NOISY_FAMILIES = ["topk", "batchtopk", "mp"]  # the noisy-world counterpoint (sae_lib.noisy_world)


@dataclass(frozen=True)
class TreeScale:
    """How much of each experiment a run profile trains. A step is one batch of 200 fresh samples."""

    tune_steps: int  # each probe of the ReLU's L1 bisection
    ch4_steps: int
    ch4_seeds: list[int]
    sweep_steps: int  # chapter 5's correlation sweep and its k = 2 runs
    sweep_seeds: list[int]
    k2_seeds: list[int]
    grid_steps: int
    grid_seeds: list[int]  # per cell of the grid
    child_means: list[float]  # half, equal, double the parent's 1.5
    child_spreads: list[float]
    adaptive_steps: int  # one seed: the sweep's first
    noisy_steps: int
    noisy_seeds: list[int]


SCALES = {
    "ci": TreeScale(
        tune_steps=600, ch4_steps=1_500, ch4_seeds=[0, 1, 2], sweep_steps=2_000, sweep_seeds=[0, 1], k2_seeds=[0],
        grid_steps=1_000, grid_seeds=[0], child_means=[0.75, 3.0], child_spreads=[0.25], adaptive_steps=1_200,
        noisy_steps=1_000, noisy_seeds=[0],
    ),
    # The papers' scale: 15k steps, 10 seeds (3 per grid cell); hours on a laptop CPU, so it ships.
    "full": TreeScale(
        tune_steps=5_000, ch4_steps=15_000, ch4_seeds=list(range(10)), sweep_steps=15_000,
        sweep_seeds=list(range(10)), k2_seeds=list(range(10)), grid_steps=15_000, grid_seeds=[0, 1, 2],
        child_means=[0.75, 1.5, 3.0], child_spreads=[0.1, 0.25, 0.5], adaptive_steps=15_000,
        noisy_steps=15_000, noisy_seeds=[0, 1, 2],
    ),
}


def tree_scale(profile: str | None = None) -> TreeScale:
    """The scale of ``profile`` (default: the active run profile, see :mod:`sae_lib.profile`)."""
    return SCALES[profile or current_profile()]


def with_l1(variants: Mapping[str, Mapping], l1_coeff: float) -> dict[str, dict]:
    """``variants`` with the bisected ``l1_coeff`` given to every ReLU variant (the others are unchanged)."""
    return {name: {**settings, "l1_coeff": l1_coeff} if settings.get("family", name) == "relu" else dict(settings)
            for name, settings in variants.items()}


def busy_tree(tree: ConceptTree) -> ConceptTree:
    """Chapter 5's tree for adaptive sparsity: ``tree``'s concepts, its top-level ones now firing independently
    (parents with probability 0.3, childless concepts 0.15), so a sample can hold many concepts."""
    return ConceptTree(tuple(Concept(0.3 if c.children else 0.15, c.children) for c in tree.roots), exclusive=False)
