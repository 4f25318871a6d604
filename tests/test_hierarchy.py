"""The concept-tree generator: structure, sampling, conditional orthogonality, clear errors."""

import math

import pytest
import torch

from sae_lib import (Concept, ConceptTree, conditionally_orthogonal_dictionary, cosine_matrix, hierarchical_data,
                     paper_tree)
from sae_lib.hierarchy import sibling_mixing

PAPER_GROUPS = ((0, 4, 8, 12, 13, 14, 15, 16, 17, 18, 19), (1, 2, 3), (5, 6, 7), (9, 10, 11))


def test_paper_tree_structure():
    tree = paper_tree()
    assert tree.n_features == 20
    assert tree.parent == (-1, 0, 0, 0, -1, 4, 4, 4, -1, 8, 8, 8) + (-1,) * 8
    assert tree.sibling_groups == PAPER_GROUPS
    assert tree.depth.count(1) == 9 and tree.child_indices == (1, 2, 3, 5, 6, 7, 9, 10, 11)
    assert tree.children[4] == (5, 6, 7) and tree.children[12] == ()
    assert tree.ancestor_pairs()[:3] == [(0, 1), (0, 2), (0, 3)] and len(tree.ancestor_pairs()) == 9
    assert tree.expected_l0() == pytest.approx(1.36)
    assert tree.labels[:5] == ("P1", "P1.a", "P1.b", "P1.c", "P2") and tree.labels[-1] == "L8"


def test_sampling_follows_the_tree():
    tree = paper_tree()
    active = tree.sample_active(100_000, torch.Generator().manual_seed(0))
    top = [i for i, p in enumerate(tree.parent) if p < 0]
    assert (active[:, top].sum(1) == 1).all(), "exactly one top-level concept per sample"
    for child in tree.child_indices:
        assert not (active[:, child] & ~active[:, tree.parent[child]]).any(), "a child only with its parent"
    for group in tree.sibling_groups[1:]:
        assert (active[:, list(group)].sum(1) <= 1).all(), "exclusive siblings never co-occur"
    freq = active.float().mean(0)
    torch.testing.assert_close(freq[[0, 4, 8]], torch.full((3,), 0.2), atol=0.006, rtol=0)
    torch.testing.assert_close(freq[list(tree.child_indices)], torch.full((9,), 0.04), atol=0.004, rtol=0)
    torch.testing.assert_close(freq[12:], torch.full((8,), 0.05), atol=0.004, rtol=0)
    assert active.sum(1).float().mean().item() == pytest.approx(1.36, abs=0.01)


def test_independent_concepts_when_not_exclusive():
    tree = ConceptTree((Concept(0.5, (Concept(0.3), Concept(0.6)), exclusive=False), Concept(0.25)), exclusive=False)
    active = tree.sample_active(100_000, torch.Generator().manual_seed(1))
    torch.testing.assert_close(active.float().mean(0), torch.tensor([0.5, 0.15, 0.3, 0.25]), atol=0.006, rtol=0)
    both_children = (active[:, 1] & active[:, 2]).float().mean().item()
    assert both_children == pytest.approx(0.5 * 0.3 * 0.6, abs=0.006)
    assert tree.expected_l0() == pytest.approx(1.2)


@pytest.mark.parametrize("correlation", [0.0, 0.3, 0.6, 0.9])
def test_conditional_orthogonality_is_exact(correlation):
    tree = paper_tree()
    dictionary = conditionally_orthogonal_dictionary(tree, 20, correlation, seed=3)
    torch.testing.assert_close(dictionary.norm(dim=1), torch.ones(20))
    gram = cosine_matrix(dictionary, dictionary)
    target = torch.eye(20)
    for group in tree.sibling_groups:
        for i in group:
            for j in group:
                if i != j:
                    target[i, j] = correlation
    torch.testing.assert_close(gram, target, atol=1e-5, rtol=0)  # siblings ρ, parent ⟂ child, the rest ⟂


def test_wider_space_and_determinism():
    tree = paper_tree()
    a = conditionally_orthogonal_dictionary(tree, 32, 0.5, seed=1)
    assert a.shape == (20, 32)
    assert torch.equal(a, conditionally_orthogonal_dictionary(tree, 32, 0.5, seed=1))
    assert not torch.equal(a, conditionally_orthogonal_dictionary(tree, 32, 0.5, seed=2))


def test_mixing_matches_the_papers_epsilon_mixing():
    """The paper mixes v_i = (1-ε) q_i + ε/(m-1) Σ_{j≠i} q_j and renormalises; its code uses ε = 0.0895
    for 3 siblings and ε = 0.3 for 11 to get a correlation of 0.1. Same family of vectors as ours."""
    for m, eps in [(3, 0.0895), (11, 0.3)]:
        q = torch.eye(m, dtype=torch.float64)
        v = (1 - eps) * q + eps / (m - 1) * (q.sum(0) - q)
        v = v / v.norm(dim=1, keepdim=True)
        assert (v[0] @ v[1]).item() == pytest.approx(0.1, abs=0.001)
        a, b = sibling_mixing(m, (v[0] @ v[1]).item())
        ours = a * q + b * q.sum(0)
        torch.testing.assert_close(ours, v)


def test_hierarchical_data_is_codes_times_dictionary():
    data = hierarchical_data(20_000, correlation=0.3, seed=0)
    assert data.x.shape == (20_000, 20) and data.codes.shape == (20_000, 20)
    torch.testing.assert_close(data.x, data.codes @ data.dictionary)
    assert data.correlation == 0.3 and data.tree.n_features == 20
    sizes = data.codes[data.codes > 0]
    assert sizes.mean().item() == pytest.approx(1.5, abs=0.01) and sizes.std().item() == pytest.approx(0.25, abs=0.01)


def test_child_magnitudes_and_shared_dictionary():
    data = hierarchical_data(20_000, child_magnitude=(3.0, 0.1), seed=1)
    children = list(data.tree.child_indices)
    child_sizes = data.codes[:, children][data.codes[:, children] > 0]
    assert child_sizes.mean().item() == pytest.approx(3.0, abs=0.01)
    assert data.codes[:, [0, 4, 8]][data.codes[:, [0, 4, 8]] > 0].mean().item() == pytest.approx(1.5, abs=0.02)
    other = hierarchical_data(100, seed=7, dictionary_seed=1)
    assert torch.equal(other.dictionary, data.dictionary)
    assert torch.equal(hierarchical_data(100, seed=7).x, hierarchical_data(100, seed=7).x)


@pytest.mark.parametrize("build, message", [
    (lambda: ConceptTree((Concept(0.7), Concept(0.6))), "sum to at most 1"),
    (lambda: ConceptTree((Concept(0.5, (Concept(0.6), Concept(0.6))),)), "sum to at most 1"),
    (lambda: ConceptTree((Concept(0.0),)), r"lie in \(0, 1\]"),
    (lambda: ConceptTree((Concept(1.5),), exclusive=False), r"lie in \(0, 1\]"),
    (lambda: paper_tree(p_parent=0.4), "no probability for the leaves"),
    (lambda: paper_tree(n_leaves=0), "must sum to 1"),
    (lambda: paper_tree(n_parents=-1), "non-negative integer"),
    (lambda: conditionally_orthogonal_dictionary(paper_tree(), 20, 1.0), r"\[0, 1\)"),
    (lambda: conditionally_orthogonal_dictionary(paper_tree(), 20, -0.1), r"\[0, 1\)"),
    (lambda: conditionally_orthogonal_dictionary(paper_tree(), 19, 0.3), "needs d >= n_features"),
    (lambda: hierarchical_data(10, d=12), "needs d >= n_features"),
    (lambda: hierarchical_data(10, magnitude=(0.0, 0.1)), "magnitude"),
    (lambda: hierarchical_data(10, child_magnitude=(1.0, -1.0)), "child_magnitude"),
    (lambda: hierarchical_data(0), "n_samples"),
])
def test_impossible_settings_are_clear_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_wrong_types_are_clear_errors():
    with pytest.raises(TypeError, match="ConceptTree"):
        hierarchical_data(10, tree=(Concept(1.0),))
    with pytest.raises(TypeError, match="tuple of Concept"):
        ConceptTree([Concept(1.0)])


def test_sibling_mixing_gives_the_requested_cosine():
    for m in (2, 3, 11):
        for rho in (0.0, 0.3, 0.9):
            a, b = sibling_mixing(m, rho)
            norm2 = a * a + 2 * a * b + m * b * b
            assert (2 * a * b + m * b * b) / norm2 == pytest.approx(rho) and norm2 == pytest.approx(1.0)
    assert sibling_mixing(3, 0.0) == (1.0, 0.0)
    assert math.isclose(sum(sibling_mixing(1, 0.5)), 1.0)  # an only child keeps its direction
