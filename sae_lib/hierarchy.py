"""Hierarchical concepts with conditionally orthogonal geometry (the MP-SAE paper's synthetic tree).

A *concept tree* says which features may be active together: a child can only be active when its
parent is, and the children of an *exclusive* node are mutually exclusive (at most one is chosen).
Its geometry follows one rule, **conditional orthogonality**: every feature is orthogonal to its
parent, its children and everything outside its own sibling group, while siblings may correlate with
each other by a chosen cosine ``correlation``. So a parent and its child are exactly orthogonal even
though they are always active together, and two siblings (never active together) can point in
similar directions: the opposite of what a "features are nearly orthogonal and independent" SAE
expects.

:func:`paper_tree` is the default tree of Costa et al. (2025): 3 parents with 3 exclusive children each
and 8 childless top-level nodes, exactly one top-level node per sample, expected L0 = 1.36.
:func:`hierarchical_data` samples it and returns the data, true codes, true dictionary and the tree;
held-out samples are drawn with :func:`~sae_lib.synthetic.held_out_seed` and the training data's
``dictionary_seed``.
How chapters 4 and 5 train and score SAEs on such data is :mod:`sae_lib.tree_recipes`.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor

from .synthetic import SyntheticData
from .util import is_integer, positive_int, seeded_generator

_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Concept:
    """One node of a concept tree: a feature with its own direction.

    ``p`` is the probability that this concept is active given that its parent is (for a top-level
    concept: given nothing). Inside an exclusive group, ``p`` is the probability that this concept is
    *the* one chosen; the group's probabilities may sum to less than 1, the rest meaning "none".
    ``exclusive`` says whether this concept's own children are mutually exclusive.
    """

    p: float
    children: tuple[Concept, ...] = ()
    exclusive: bool = True


@dataclass(frozen=True)
class ConceptTree:
    """A forest of :class:`Concept` s; ``exclusive`` makes the top-level concepts mutually exclusive.

    Features are numbered depth-first (a parent, then its subtree, then the next top-level concept),
    which is also the paper's numbering.
    """

    roots: tuple[Concept, ...]
    exclusive: bool = True

    def __post_init__(self):
        _check_group("the top-level concepts", self.roots, self.exclusive)

    @cached_property
    def _flat(self) -> tuple[list[Concept], list[int], list[tuple[int, ...]]]:
        nodes: list[Concept] = []
        parent: list[int] = []
        groups: list[tuple[int, ...]] = []

        def visit(siblings: tuple[Concept, ...], parent_index: int) -> None:
            indices = []
            for node in siblings:
                index = len(nodes)
                indices.append(index)
                nodes.append(node)
                parent.append(parent_index)
                visit(node.children, index)
            if indices:
                groups.append(tuple(indices))

        visit(self.roots, -1)
        groups.sort()
        return nodes, parent, groups

    @property
    def n_features(self) -> int:
        return len(self._flat[0])

    @property
    def parent(self) -> tuple[int, ...]:
        """Index of each feature's parent, ``-1`` for a top-level feature."""
        return tuple(self._flat[1])

    @property
    def sibling_groups(self) -> tuple[tuple[int, ...], ...]:
        """Features that share a parent (the top-level features form one group). Siblings correlate."""
        return tuple(self._flat[2])

    @property
    def depth(self) -> tuple[int, ...]:
        """0 for top-level features, 1 for their children, and so on."""
        depth: list[int] = []
        for p in self.parent:
            depth.append(0 if p < 0 else depth[p] + 1)
        return tuple(depth)

    @property
    def children(self) -> tuple[tuple[int, ...], ...]:
        """Indices of each feature's children."""
        kids: list[list[int]] = [[] for _ in range(self.n_features)]
        for child, p in enumerate(self.parent):
            if p >= 0:
                kids[p].append(child)
        return tuple(tuple(k) for k in kids)

    @property
    def labels(self) -> tuple[str, ...]:
        """Short names for plots and tables: top-level concepts with children are P1, P2, ..., childless
        ones L1, L2, ...; a child is its parent's name plus a letter (P1.a, P1.b, ...)."""
        labels: list[str] = []
        counts = {"P": 0, "L": 0}
        for i, p in enumerate(self.parent):
            if p >= 0:
                rank = self.children[p].index(i)
                labels.append(f"{labels[p]}.{string.ascii_lowercase[rank] if rank < 26 else rank + 1}")
            else:
                kind = "P" if self.children[i] else "L"
                counts[kind] += 1
                labels.append(f"{kind}{counts[kind]}")
        return tuple(labels)

    @property
    def child_indices(self) -> tuple[int, ...]:
        """Every feature that has a parent."""
        return tuple(i for i, p in enumerate(self.parent) if p >= 0)

    def ancestor_pairs(self) -> list[tuple[int, int]]:
        """All (ancestor, descendant) pairs: the pairs conditional orthogonality makes orthogonal even
        though they fire together."""
        pairs = []
        for i, p in enumerate(self.parent):
            while p >= 0:
                pairs.append((p, i))
                p = self.parent[p]
        return sorted(pairs)

    def expected_l0(self) -> float:
        """Mean number of active features per sample."""
        def total(siblings: tuple[Concept, ...], reach: float) -> float:
            return sum(reach * c.p + total(c.children, reach * c.p) for c in siblings)

        return total(self.roots, 1.0)

    def sample_active(self, n_samples: int, generator: torch.Generator) -> Tensor:
        """A boolean ``(n_samples, n_features)`` mask of which features are active in each sample."""
        active = torch.zeros(n_samples, self.n_features, dtype=torch.bool)
        index = 0

        def visit(siblings: tuple[Concept, ...], exclusive: bool, parent_on: Tensor) -> None:
            nonlocal index
            u = torch.rand(n_samples, generator=generator) if exclusive else None
            low = 0.0
            for node in siblings:
                if exclusive:  # one uniform draw per sample picks at most one sibling
                    chosen = (u >= low) & (u < low + node.p)
                    low = low + node.p
                else:
                    chosen = torch.rand(n_samples, generator=generator) < node.p
                on = parent_on & chosen
                active[:, index] = on
                index += 1
                visit(node.children, node.exclusive, on)

        visit(self.roots, self.exclusive, torch.ones(n_samples, dtype=torch.bool))
        return active


def _check_group(where: str, group: tuple[Concept, ...], exclusive: bool) -> None:
    """Probabilities must be in (0, 1], and an exclusive group's must not sum to more than 1."""
    if not isinstance(group, tuple) or not all(isinstance(c, Concept) for c in group):
        raise TypeError(f"{where} must be a tuple of Concept, got {group!r}")
    for concept in group:
        if isinstance(concept.p, bool) or not isinstance(concept.p, (int, float)) or not 0 < concept.p <= 1:
            raise ValueError(f"every probability must lie in (0, 1]; {where} contain p={concept.p!r}")
    total = sum(c.p for c in group)
    if exclusive and total > 1 + _TOLERANCE:
        raise ValueError(
            f"{where} are mutually exclusive, so their probabilities must sum to at most 1 "
            f"(the rest means 'none'); they sum to {total:.4g}"
        )
    for concept in group:
        if concept.children:
            _check_group(f"the children of a concept with p={concept.p}", concept.children, concept.exclusive)


def paper_tree(
    n_parents: int = 3, n_children: int = 3, n_leaves: int = 8, *, p_parent: float = 0.2, p_child: float = 0.2
) -> ConceptTree:
    """The tree of Costa et al. (2025): exactly one top-level concept per sample, chosen among
    ``n_parents`` parents (``p_parent`` each) and ``n_leaves`` childless concepts that share the rest
    of the probability equally; an active parent picks one of its ``n_children`` exclusive children
    (``p_child`` each) or none. The defaults give 20 features and an expected L0 of 1.36.
    """
    for name, value in (("n_parents", n_parents), ("n_children", n_children), ("n_leaves", n_leaves)):
        if not is_integer(value) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if n_parents + n_leaves == 0:
        raise ValueError("the tree needs at least one top-level concept (n_parents + n_leaves > 0)")
    p_rest = 1.0 - n_parents * p_parent
    if n_leaves == 0 and abs(p_rest) > _TOLERANCE:
        raise ValueError(f"without leaves the parents' probabilities must sum to 1; they sum to {1 - p_rest:.4g}")
    if n_leaves and p_rest <= 0:
        raise ValueError(f"{n_parents} parents with p_parent={p_parent} leave no probability for the leaves")
    children = tuple(Concept(p_child) for _ in range(n_children))
    parents = tuple(Concept(p_parent, children) for _ in range(n_parents))
    leaves = tuple(Concept(p_rest / n_leaves) for _ in range(n_leaves)) if n_leaves else ()
    return ConceptTree(parents + leaves, exclusive=True)


def sibling_mixing(group_size: int, correlation: float) -> tuple[float, float]:
    """Coefficients ``(a, b)`` with ``v_i = a·q_i + b·Σ_j q_j`` (sum over the group) turning orthonormal
    ``q`` s into unit vectors whose pairwise cosine is exactly ``correlation``.

    This is the symmetric square root of the target Gram matrix ``(1-ρ)·I + ρ·11ᵀ``: each vector moves
    toward the group's other vectors (the paper's mixing) by exactly the amount the correlation needs.
    """
    rho = correlation
    a = math.sqrt(1 - rho)
    b = (math.sqrt(1 - rho + group_size * rho) - a) / group_size
    return a, b


def conditionally_orthogonal_dictionary(tree: ConceptTree, d: int, correlation: float, *, seed: int = 0) -> Tensor:
    """Unit-norm feature directions ``(n_features, d)`` for ``tree``: siblings have cosine ``correlation``,
    every other pair (parent and child included) is exactly orthogonal.

    Start from orthonormal directions (QR of a Gaussian matrix), then mix each sibling group within its
    own span only. Groups use disjoint basis vectors, so mixing never couples a parent with a child.
    """
    positive_int("d", d)
    if not isinstance(correlation, (int, float)) or not 0 <= correlation < 1:
        raise ValueError(f"correlation must lie in [0, 1) (1 would make siblings identical), got {correlation!r}")
    n = tree.n_features
    if n > d:
        raise ValueError(
            f"{n} features cannot be made orthogonal across levels in d={d} dimensions: conditional "
            f"orthogonality needs d >= n_features"
        )
    gen = seeded_generator(seed)
    basis = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64)).Q.T[:n]
    dictionary = basis.clone()
    for group in tree.sibling_groups:
        a, b = sibling_mixing(len(group), correlation)
        q = basis[list(group)]
        dictionary[list(group)] = a * q + b * q.sum(0, keepdim=True)
    return F.normalize(dictionary, dim=1).float()


@dataclass
class HierarchicalData(SyntheticData):
    """:class:`~sae_lib.SyntheticData` drawn from a concept tree, with the tree and its correlation."""

    tree: ConceptTree
    correlation: float


def hierarchical_data(
    n_samples: int,
    *,
    tree: ConceptTree | None = None,
    d: int | None = None,
    correlation: float = 0.0,
    magnitude: tuple[float, float] = (1.5, 0.25),
    child_magnitude: tuple[float, float] | None = None,
    seed: int = 0,
    dictionary_seed: int | None = None,
) -> HierarchicalData:
    """Sample ``n_samples`` activations ``x = codes @ dictionary`` from a concept tree.

    Active features get magnitudes from a normal ``(mean, std)``: ``magnitude`` for top-level features,
    ``child_magnitude`` (default: the same) for features that have a parent; they are clipped below
    at 5% of the mean so "active" stays positive. ``d`` defaults to the number of features (the paper's
    20 features in R^20). The dictionary depends on ``dictionary_seed`` (default ``seed``) only, so
    several draws can share one dictionary.
    """
    positive_int("n_samples", n_samples)
    tree = paper_tree() if tree is None else tree
    if not isinstance(tree, ConceptTree):
        raise TypeError(f"tree must be a ConceptTree, got {type(tree).__name__}")
    child_magnitude = magnitude if child_magnitude is None else child_magnitude
    for name, (mean, std) in (("magnitude", magnitude), ("child_magnitude", child_magnitude)):
        if not (mean > 0 and std >= 0):
            raise ValueError(f"{name} must be (mean > 0, std >= 0), got {(mean, std)!r}")
    d = tree.n_features if d is None else d
    dictionary = conditionally_orthogonal_dictionary(
        tree, d, correlation, seed=seed if dictionary_seed is None else dictionary_seed
    )

    gen = seeded_generator(seed)
    active = tree.sample_active(n_samples, gen)
    is_child = torch.tensor([p >= 0 for p in tree.parent])
    mean = torch.where(is_child, child_magnitude[0], magnitude[0])
    std = torch.where(is_child, child_magnitude[1], magnitude[1])
    sizes = (mean + std * torch.randn(n_samples, tree.n_features, generator=gen)).clamp_min(0.05 * mean)
    codes = active * sizes
    return HierarchicalData(x=codes @ dictionary, codes=codes, dictionary=dictionary, tree=tree,
                            correlation=float(correlation))
