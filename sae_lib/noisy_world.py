"""A world with superposition noise, for chapter 5's SynthSAEBench counterpoint.

SynthSAEBench (Chanin & Garriga-Alonso 2026) reports that MP-SAEs reconstruct better than other SAEs
*without* recovering the true features better. The tree of chapters 4-5 cannot test that: it has as many
concepts as dimensions and no noise. This world has twice as many features as dimensions (so every input
carries interference) plus Gaussian noise, and :func:`run_in_noisy_world` trains one SAE in it and scores
both sides of the claim: reconstruction (FVU) and recovery (matched cosine to the true features).
Reconstruction is scored on held-out samples drawn with :func:`~sae_lib.synthetic.held_out_seed`.
"""

from __future__ import annotations

from .metrics import evaluate, match_atoms
from .saes import MPSAE, SAE, BatchTopKSAE, TopKSAE
from .synthetic import held_out_seed, superposition_data
from .training import train_sae

NOISY_WORLD = {"n_features": 64, "d": 32, "p_active": 0.05, "noise": 0.1}
"""64 true features in 32 dimensions, each active with probability 0.05 (3.2 per input), noise std 0.1."""

NOISY_WORLD_TRAINING = {"batch_size": 200, "lr": 3e-3}


def noisy_world_sae(family: str, *, seed: int = 0) -> SAE:
    """The three SAEs compared, each with one latent per true feature and a budget of ~3.2 atoms."""
    d, n = NOISY_WORLD["d"], NOISY_WORLD["n_features"]
    average_l0 = NOISY_WORLD["p_active"] * n
    makers = {
        "topk": lambda: TopKSAE(d, n, round(average_l0), seed=seed),
        "batchtopk": lambda: BatchTopKSAE(d, n, average_l0, seed=seed),
        "mp": lambda: MPSAE(d, n, round(average_l0), seed=seed),
    }
    if family not in makers:
        raise ValueError(f"family must be one of {sorted(makers)}, got {family!r}")
    return makers[family]()


def run_in_noisy_world(family: str, *, steps: int, seed: int = 0, n_test: int = 5_000) -> dict[str, float]:
    """Train ``family`` on ``steps`` fresh batches of the noisy world drawn with ``seed``; score it on
    ``n_test`` held-out samples (same dictionary, :func:`~sae_lib.synthetic.held_out_seed`) and against the
    true dictionary."""
    batch = NOISY_WORLD_TRAINING["batch_size"]
    train = superposition_data(steps * batch, seed=seed, **NOISY_WORLD)
    held_out = superposition_data(n_test, seed=held_out_seed(seed), dictionary=train.dictionary, **NOISY_WORLD)
    sae = noisy_world_sae(family, seed=seed)
    train_sae(sae, train.x, steps=steps, seed=seed, progress=False, **NOISY_WORLD_TRAINING)
    match = match_atoms(sae.W_dec, train.dictionary)
    stats = evaluate(sae, held_out.x)
    return {
        "fvu": stats["fvu"],
        "l0": stats["l0"],
        "mean_cos": match.mean,
        "found_at_0.9": match.fraction_above(0.9),
        "dead": stats["dead"],
    }
