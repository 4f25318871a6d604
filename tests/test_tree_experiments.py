"""Chapters 4-5's experiments, defined once: a scale per run profile, the tuned L1 weight for ReLU only,
and chapter 5's busy tree."""

import pytest

from sae_lib import paper_tree
from sae_lib.tree_experiments import GRID_VARIANTS, SCALES, busy_tree, tree_scale, with_l1


def test_each_profile_has_a_scale_and_the_full_one_is_the_papers(monkeypatch):
    monkeypatch.setenv("SAE_BOOK_PROFILE", "ci")
    assert tree_scale() is SCALES["ci"] and tree_scale("full") is SCALES["full"]
    full = SCALES["full"]
    assert full.ch4_steps == full.sweep_steps == full.grid_steps == 15_000 and len(full.sweep_seeds) == 10
    for name in ("ch4_steps", "sweep_steps", "grid_steps", "adaptive_steps", "noisy_steps", "tune_steps"):
        assert getattr(SCALES["ci"], name) < getattr(full, name)


def test_with_l1_gives_the_weight_to_relu_variants_only():
    variants = with_l1({**GRID_VARIANTS, "relu again": {"family": "relu"}}, 0.01)
    assert variants["relu"] == {"l1_coeff": 0.01} and variants["relu again"]["l1_coeff"] == 0.01
    assert variants["mp"] == {} and "l1_coeff" not in GRID_VARIANTS["relu"]  # the definitions stay as they are


def test_busy_tree_keeps_the_concepts_and_frees_the_top_level():
    tree = paper_tree()
    busy = busy_tree(tree)
    assert busy.parent == tree.parent and not busy.exclusive
    assert busy.expected_l0() == pytest.approx(3 * 0.3 * (1 + 0.6) + 8 * 0.15)
