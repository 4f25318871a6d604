"""The recipe chapters 4 and 5 share to train and score SAEs on a concept tree (:mod:`sae_lib.hierarchy`).

The chapter builds the tree and hands it in (:func:`run_on_tree`, :func:`tune_l1`), so the tree a reader
sees is the tree that trains. The recipe makes two choices for every SAE family, each in one place:
the paper's optimiser settings (:data:`PAPER_TRAINING`) and a pre-bias fixed at zero
(:func:`train_on_tree`). Every SAE is scored on held-out samples of its seed's tree data, drawn with
:func:`~sae_lib.synthetic.held_out_seed` and the same dictionary.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from .hierarchy import ConceptTree, HierarchicalData, hierarchical_data
from .metrics import absorption_score, evaluate, gram_errors, match_atoms
from .saes import FAMILIES, SAE
from .synthetic import held_out_seed
from .training import History, train_sae
from .util import positive_int, progress_bar

PAPER_TRAINING = dict(batch_size=200, lr=3e-2, betas=(0.5, 0.9375), schedule="wsd", warmup=100 / 15_000,
                      decay=0.2, final_lr_frac=0.1, grad_clip=1.0)
"""Costa et al.'s training settings on the tree: Adam with lr 3e-2 and betas (0.5, 0.9375), batches of 200,
a warm-up over the first 100 of their 15k steps, a linear decay to 10% of the lr over the last 20%,
gradient norm clipped at 1."""

TREE_SAE_SETTINGS: dict[str, dict] = {"relu": {"l1_coeff": 3e-3}, "topk": {"k": 2}, "mp": {"k": 3},
                                      "batchtopk": {"k": 1.36}, "matryoshka": {"k": 1.36}}
"""The book's choice per family on the paper's tree. ReLU: the L1 weight that gives L0 ≈ 1.36, the
tree's own L0 (the paper tunes it during training to reach that target). TopK: k = 2, the most features
any input of the tree has. MP: k = 3 steps (k = 2 stalls in poor local optima in our runs; extra steps
cost nothing once the residual is zero, since a step only adds an atom that correlates positively).
BatchTopK and Matryoshka: an average of k = 1.36 active latents per sample, the tree's L0 (the paper's
setting for its BatchTopK); Matryoshka keeps its default prefixes (n/4, n/2, n) = (5, 10, 20) latents."""


def tree_sae(family: str, d_in: int, n_latents: int | None = None, *, seed: int = 0, **settings) -> SAE:
    """An SAE of ``family`` for tree data, with :data:`TREE_SAE_SETTINGS` unless ``settings`` override them."""
    if family not in FAMILIES:
        raise ValueError(f"unknown SAE family {family!r}; choose one of {sorted(FAMILIES)}")
    return FAMILIES[family](d_in, d_in if n_latents is None else n_latents, seed=seed,
                            **{**TREE_SAE_SETTINGS[family], **settings})


def train_on_tree(sae: SAE, x: Tensor, *, steps: int, seed: int = 0, **overrides) -> History:
    """:func:`~sae_lib.train_sae` with :data:`PAPER_TRAINING` (``overrides`` win) and the pre-bias fixed at zero.

    ``b_dec`` is zeroed and frozen here, before training, and not initialised from the data. The tree's
    data has no offset to learn, and a trainable pre-bias can soak up the direction that all top-level
    features share when they correlate (one of them is always active), which changes the dictionary the
    SAE has to find. The paper's MP-SAE has no bias either; fixing it for every family compares the
    dictionaries alone.
    """
    with torch.no_grad():
        sae.b_dec.zero_()
    sae.b_dec.requires_grad_(False)
    return train_sae(sae, x, steps=steps, seed=seed, init_b_dec=False, **{**PAPER_TRAINING, **overrides})


def tree_scores(sae: SAE, test: HierarchicalData) -> dict[str, float]:
    """How well ``sae`` recovered ``test``'s tree: matched cosines (mean and worst), absorption, the flat
    and hierarchical Gram errors (see :mod:`sae_lib.metrics`), and FVU, L0 and dead latents on ``test.x``."""
    learned, true, tree = sae.W_dec, test.dictionary, test.tree
    match = match_atoms(learned, true)
    stats = evaluate(sae, test.x)
    return {
        "mean_cos": match.mean,
        "min_cos": match.cosine.min().item(),
        "absorption": absorption_score(learned, true, tree.parent),
        **gram_errors(learned, true, tree.sibling_groups, tree.ancestor_pairs()),
        "fvu": stats["fvu"],
        "l0": stats["l0"],
        "dead": stats["dead"],
    }


@dataclass
class TreeRun:
    """One trained SAE, the data settings it was trained with, the held-out data it is scored on (which
    carries the true dictionary and tree) and its :func:`tree_scores`."""

    name: str
    seed: int
    data: dict  # the hierarchical_data settings: correlation, child_magnitude, ...
    sae: SAE
    test: HierarchicalData
    scores: dict[str, float]


def result_row(name: str, seed: int, data: Mapping, scores: Mapping) -> dict:
    """One trained SAE as a row of the chapters' tables: ``SAE`` (its name), ``seed``, its data settings
    (``child_magnitude`` as two columns, ``child mean`` and ``child spread``) and its scores. Runs trained
    here (:func:`runs_table`) and the shipped full-profile runs (:mod:`sae_lib.full_profile`) share it."""
    data = dict(data)
    if "child_magnitude" in data:
        data["child mean"], data["child spread"] = data.pop("child_magnitude")
    return {"SAE": name, "seed": seed, **data, **scores}


def runs_table(runs: Sequence[TreeRun]) -> pd.DataFrame:
    """The runs as a table, one :func:`result_row` per trained SAE."""
    return pd.DataFrame([result_row(run.name, run.seed, run.data, run.scores) for run in runs])


def _train_and_test_data(tree: ConceptTree, n_train: int, n_test: int, seed: int,
                         data_settings: Mapping) -> tuple[HierarchicalData, HierarchicalData]:
    """``seed``'s training data and held-out data from ``tree``: one dictionary, independent samples."""
    data = hierarchical_data(n_train, tree=tree, seed=seed, **data_settings)
    test = hierarchical_data(n_test, tree=tree, seed=held_out_seed(seed), dictionary_seed=seed, **data_settings)
    return data, test


def run_on_tree(
    tree: ConceptTree,
    variants: Mapping[str, Mapping],
    *,
    steps: int,
    seeds: Sequence[int],
    n_test: int = 10_000,
    progress: bool = True,
    **data_settings,
) -> list[TreeRun]:
    """Train every variant on every seed's data from ``tree`` with the paper's recipe, and score it.

    ``variants`` maps a name to :func:`tree_sae` settings; ``family`` defaults to the name, so
    ``{"relu": {}, "topk k=1": {"family": "topk", "k": 1}}`` works. For each seed, all variants see the
    same data: ``steps × batch_size`` fresh samples (no sample is seen twice, as in the paper) drawn by
    :func:`hierarchical_data` from ``tree`` with ``data_settings`` and that seed, plus ``n_test``
    held-out samples with the same dictionary. The seed also sets each SAE's initialisation and batch order.
    """
    runs = []
    n_train = steps * PAPER_TRAINING["batch_size"]
    bar = progress_bar(total=len(seeds) * len(variants), desc="training on the tree", show=progress)
    for seed in seeds:
        data, test = _train_and_test_data(tree, n_train, n_test, seed, data_settings)
        for name, settings in variants.items():
            settings = dict(settings)
            family = settings.pop("family", name)
            sae = tree_sae(family, data.x.shape[1], tree.n_features, seed=seed, **settings)
            train_on_tree(sae, data.x, steps=steps, seed=seed, progress=False)
            runs.append(TreeRun(name, seed, dict(data_settings), sae, test, tree_scores(sae, test)))
            bar.update()
    bar.close()
    return runs


@dataclass
class L1Tuning:
    """The result of :func:`tune_l1`: the chosen weight and every probe ``(l1_coeff, L0)`` in order."""

    l1_coeff: float
    probes: list[tuple[float, float]]


def tune_l1(
    tree: ConceptTree, target_l0: float, *, steps: int, seed: int = 0, low: float = 1e-3, high: float = 3e-2,
    probes: int = 5, n_test: int = 5_000, **data_settings,
) -> L1Tuning:
    """The ReLU SAE's L1 weight that lands its L0 on ``target_l0`` on ``tree``'s data, by bisection in log scale.

    L0 falls as the weight grows, so each probe trains one ReLU SAE (``steps`` steps of the paper's
    recipe on ``seed``'s data, ``data_settings`` passed to :func:`hierarchical_data`), measures its L0 on
    held-out samples, and keeps the half of ``[low, high]`` that contains the target. The answer is the
    geometric middle of the last interval. The paper reaches its target L0 by adapting the weight during
    training instead; a bisection is easier to read and gives one fixed weight to reuse.
    """
    positive_int("probes", probes)
    if not 0 < low < high:
        raise ValueError(f"need 0 < low < high, got low={low!r}, high={high!r}")
    data, test = _train_and_test_data(tree, steps * PAPER_TRAINING["batch_size"], n_test, seed, data_settings)
    tried = []
    for _ in range(probes):
        middle = math.sqrt(low * high)
        sae = tree_sae("relu", data.x.shape[1], tree.n_features, seed=seed, l1_coeff=middle)
        train_on_tree(sae, data.x, steps=steps, seed=seed, progress=False)
        l0 = evaluate(sae, test.x)["l0"]
        tried.append((middle, l0))
        low, high = (middle, high) if l0 > target_l0 else (low, middle)
    return L1Tuning(math.sqrt(low * high), tried)


def median_and_range(values: Sequence[float], digits: int = 2) -> str:
    """``"median [min – max]"`` of a score over seeds: how the tree chapters report a spread, so that a
    reader sees how far one seed can land from another, not one lucky or unlucky run."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("median_and_range needs at least one value")
    # statistics.median averages the two middle values of an even count, as pandas does (torch's
    # median would return the lower one), so this agrees with the chapters' median tables.
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f} – {max(values):.{digits}f}]"
