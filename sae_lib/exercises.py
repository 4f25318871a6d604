"""Checkers for the book's exercises: one function per exercise, each testing your code against the library.

Every chapter ends with a few exercises. Each has a stub for you to fill in, a check cell, and a
solution hidden behind a toggle. The check cell calls one of the functions below on *your* function:

* it runs your function and the library on several random inputs (a few shapes, a few edge cases);
* if all agree it prints a tick and returns ``True``;
* if one differs it prints one sentence, what was expected against what you returned and on which
  input, and returns ``False``, so the rest of the notebook still runs (on the solution);
* if your function still raises ``NotImplementedError`` (the unfilled stub), it says "not attempted
  yet" and returns ``False``.

The solution cells call the same checker with ``solution=True``: then a mismatch raises
:class:`ExerciseFailed`, so executing the book fails if a solution ever stops passing.
:func:`prefer` then picks the function that later cells use: yours once it passes, the solution's
otherwise. Nothing ever overwrites your own function's name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .hierarchy import conditionally_orthogonal_dictionary, paper_tree
from .metrics import (absorption_score, babel, cosine_matrix, gram_errors, match_atoms,
                      modality_score)
from .saes import MPSAE, BatchTopKSAE, ReLUSAE, TopKSAE


class ExerciseFailed(AssertionError):
    """A function gave a wrong answer in a checker run with ``solution=True``."""


class _Mismatch(Exception):
    """One sentence saying how a returned value differs from the expected one."""


@dataclass
class Case:
    """One input to try: a description for messages, the arguments, the library's answer."""

    describe: str
    args: tuple
    expected: Any
    kwargs: dict = field(default_factory=dict)
    compare: Callable[[Any, Any], None] | None = None  # raises _Mismatch; default: _compare
    call: Callable[[Callable], Any] | None = None  # how to call the function, if not fn(*args, **kwargs)
    names: tuple[str, ...] = ()  # names of the returned values, for a function that returns a tuple


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _fmt(value) -> str:
    if isinstance(value, Tensor):
        value = value.item() if value.numel() == 1 else value
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return repr(value)


def _compare(expected, got, name: str = "result", *, names: Sequence[str] = (), atol: float = 1e-4,
             rtol: float = 1e-3) -> None:
    """Raise :class:`_Mismatch` with one sentence if ``got`` is not (close to) ``expected``."""
    if isinstance(expected, (tuple, list)):
        names = names or [f"{name}[{i}]" for i in range(len(expected))]
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            raise _Mismatch(f"expected a tuple ({', '.join(names)}), got {type(got).__name__}"
                            + (f" of length {len(got)}" if isinstance(got, (tuple, list)) else ""))
        for e, g, n in zip(expected, got, names):
            _compare(e, g, n, atol=atol, rtol=rtol)
        return
    if isinstance(expected, dict):
        if not isinstance(got, dict) or set(got) != set(expected):
            keys = sorted(got) if isinstance(got, dict) else type(got).__name__
            raise _Mismatch(f"expected a dict with keys {sorted(expected)}, got {keys}")
        for key in expected:
            _compare(expected[key], got[key], f"{name}[{key!r}]", atol=atol, rtol=rtol)
        return
    if isinstance(expected, Tensor) and expected.numel() > 1:
        if not isinstance(got, Tensor):
            raise _Mismatch(f"expected {name} to be a tensor of shape {tuple(expected.shape)}, "
                            f"got {type(got).__name__}")
        if got.shape != expected.shape:
            raise _Mismatch(f"expected {name} of shape {tuple(expected.shape)}, got shape {tuple(got.shape)}")
        got, exp = got.detach().float().cpu(), expected.detach().float().cpu()
        bad = ~torch.isclose(got, exp, atol=atol, rtol=rtol, equal_nan=True)
        if bad.any():
            where = tuple(int(i) for i in bad.nonzero()[0])
            raise _Mismatch(f"expected {name}{list(where)} = {_fmt(exp[where])}, got {_fmt(got[where])} "
                            f"({int(bad.sum())} of {bad.numel()} entries differ)")
        return
    # A number (a float or a one-element tensor).
    try:
        got_number = float(got.detach() if isinstance(got, Tensor) else got)
    except (TypeError, ValueError, RuntimeError):
        raise _Mismatch(f"expected {name} to be a number, got {type(got).__name__}") from None
    exp_number = float(expected)
    if not (math.isclose(got_number, exp_number, rel_tol=rtol, abs_tol=atol)
            or (math.isnan(got_number) and math.isnan(exp_number))):
        raise _Mismatch(f"expected {name} = {_fmt(exp_number)}, got {_fmt(got_number)}")


def _run(exercise: str, fn: Callable, cases: Sequence[Case], *, solution: bool) -> bool:
    """Try ``fn`` on every case; report in one sentence, raise only for a solution."""
    name = getattr(fn, "__name__", "your function")

    def fail(message: str) -> bool:
        if solution:
            raise ExerciseFailed(f"{exercise}: the solution `{name}` fails: {message}")
        print(f"✗ {exercise}: not yet right. {message}")
        return False

    if not callable(fn):
        return fail(f"expected a function, got {type(fn).__name__}.")
    for case in cases:
        try:
            got = case.call(fn) if case.call else fn(*case.args, **case.kwargs)
        except NotImplementedError:
            if solution:
                raise
            print(f"· {exercise}: not attempted yet (`{name}` still raises NotImplementedError). "
                  f"Fill in the stub and run this cell again.")
            return False
        except Exception as error:  # noqa: BLE001 - the reader's error, reported in one sentence
            if solution:
                raise
            return fail(f"`{name}` raised {type(error).__name__}: {error} (on {case.describe}).")
        try:
            if case.compare:
                case.compare(case.expected, got)
            else:
                _compare(case.expected, got, names=case.names)
        except _Mismatch as mismatch:
            return fail(f"On {case.describe}: {mismatch}.")
    print(f"✓ {exercise}: `{name}` agrees with the library on all {len(cases)} inputs.")
    return True


def prefer(yours: Callable, solution: Callable, yours_passed: bool) -> Callable:
    """The function later cells should use: yours once it has passed its check, else the solution's."""
    if yours_passed:
        print(f"Later cells use your `{getattr(yours, '__name__', 'function')}`.")
        return yours
    print(f"Later cells use the solution's `{getattr(solution, '__name__', 'function')}` "
          f"(yours has not passed its check yet).")
    return solution


# ============================================================================ chapter 1: superposition
def _scaled_dictionary(n: int, d: int, seed: int) -> Tensor:
    """Random directions with random lengths (so forgetting to normalise shows)."""
    g = _gen(seed)
    return torch.randn(n, d, generator=g) * (0.5 + 2 * torch.rand(n, 1, generator=g))


def check_interference(fn: Callable, *, solution: bool = False) -> bool:
    """``fn(dictionary)`` -> (n, n) cosines between the features' directions, 0 on the diagonal."""

    def reference(dictionary: Tensor) -> Tensor:
        return cosine_matrix(dictionary, dictionary).fill_diagonal_(0.0)

    angles = torch.arange(5) * 2 * math.pi / 5
    pentagon = 1.7 * torch.stack([angles.cos(), angles.sin()], dim=1)
    inputs = [("5 features in 2 dimensions (a pentagon, rows of length 1.7)", pentagon),
              ("64 random features of random lengths in 32 dimensions", _scaled_dictionary(64, 32, 1)),
              ("3 orthogonal features, lengths 1, 2, 3", torch.diag(torch.tensor([1.0, 2.0, 3.0]))),
              ("a single feature in 4 dimensions", _scaled_dictionary(1, 4, 2))]
    cases = [Case(text, (d,), reference(d)) for text, d in inputs]
    return _run("interference", fn, cases, solution=solution)


def check_matched_cosine(fn: Callable, *, solution: bool = False) -> bool:
    """``fn(learned, true)`` -> (n_true,) cosines of the one-to-one matching that maximises their sum,
    in the true features' order (as ``sae_lib.match_atoms(learned, true).cosine``)."""
    true = F.normalize(torch.randn(16, 8, generator=_gen(3)), dim=1)
    shuffled = true[torch.randperm(16, generator=_gen(4))]
    merged = torch.cat([F.normalize(true[:8] + true[8:], dim=1), _scaled_dictionary(8, 8, 7)])
    merged = merged[torch.randperm(16, generator=_gen(8))]
    # Feature 0 prefers atom 0 (cos 0.8), but feature 1 has no other use for it: the best pairing
    # gives atom 0 to feature 1 (0.6) and atom 1 to feature 0 (0.7), not feature by feature.
    trap_true = torch.eye(3)[:2]
    trap_learned = torch.tensor([[1.6, 1.2, 0.0], [0.7, 0.0, 0.714], [0.0, -0.5, 0.5]])
    inputs = [("the true features shuffled and rescaled", 3 * shuffled, true),
              ("24 random learned atoms of random lengths for 16 true features in 8 dimensions",
               _scaled_dictionary(24, 8, 5), true),
              ("8 atoms that each merge two true features, 8 random atoms, shuffled", merged, true),
              ("the true features flipped (−true), shuffled", -shuffled, true),
              ("3 learned atoms for 2 true features, where taking each feature's best free atom in "
               "turn is not the best pairing", trap_learned, trap_true)]
    cases = [Case(text, (learned, t), match_atoms(learned, t).cosine) for text, learned, t in inputs]
    return _run("matched cosines", fn, cases, solution=solution)


# ============================================================================ chapter 2: the standard SAE
def _random_sae(cls, d_in: int, n_latents: int, seed: int, **settings):
    """An SAE with every parameter random: biases non-zero, decoder rows of random length."""
    sae = cls(d_in, n_latents, seed=seed, **settings)
    g = _gen(seed + 1000)
    with torch.no_grad():
        sae.W_dec.mul_(0.5 + 2 * torch.rand(n_latents, 1, generator=g))
        sae.b_dec.copy_(0.3 * torch.randn(d_in, generator=g))
        if hasattr(sae, "W_enc"):
            sae.W_enc.copy_(torch.randn(d_in, n_latents, generator=g) / math.sqrt(d_in))
            sae.b_enc.copy_(0.2 * torch.randn(n_latents, generator=g))
    return sae


def _one_latent_sae(atom: Tensor, b_dec: Tensor, l1_coeff: float) -> ReLUSAE:
    """The library's ReLU SAE with one latent whose encoder reads the unit atom and whose bias is the
    soft threshold -λd/2: it computes the exact minimiser of the chapter's loss for that atom."""
    d = atom.shape[0]
    sae = ReLUSAE(d, 1, l1_coeff=l1_coeff)
    with torch.no_grad():
        sae.W_dec.copy_(atom[None])
        sae.W_enc.copy_(F.normalize(atom, dim=0)[:, None])
        sae.b_enc.fill_(-l1_coeff * d / 2)
        sae.b_dec.copy_(b_dec)
    return sae


def check_best_code(fn: Callable, *, solution: bool = False) -> bool:
    """``fn(x, atom, b_dec, l1_coeff)`` -> ``(z, x_hat)``: for each row of ``x`` (b, d), the code
    ``z >= 0`` (b,) minimising ``(1/d)·‖x - x_hat‖² + l1_coeff·z`` with ``x_hat = z·atom/‖atom‖ + b_dec``,
    and that ``x_hat`` (b, d)."""
    cases = []
    for seed, (d, length, l1_coeff, spread) in enumerate([(8, 2.5, 0.1, 1.0), (32, 0.4, 0.02, 0.2),
                                                          (4, 1.0, 1.0, 3.0)]):
        g = _gen(130 + seed)
        atom = length * F.normalize(torch.randn(d, generator=g), dim=0)
        b_dec = 0.5 * torch.randn(d, generator=g)
        s = spread * torch.linspace(-0.5, 2.5, 7)  # magnitudes along the atom, some in the dead zone
        x = b_dec + s[:, None] * F.normalize(atom, dim=0) + 0.05 * torch.randn(7, d, generator=g)
        with torch.no_grad():
            x_hat, z = _one_latent_sae(atom, b_dec, l1_coeff)(x)
        text = (f"d = {d}, an atom of length {length}, a non-zero b_dec, λ = {l1_coeff}, 7 inputs "
                f"(threshold λd/2 = {l1_coeff * d / 2:.3g})")
        cases.append(Case(text, (x, atom, b_dec, l1_coeff), (z[:, 0], x_hat), names=("z", "x_hat")))
    return _run("the best one-atom code", fn, cases, solution=solution)


def _compare_loss(expected, got) -> None:
    _compare(expected, got, "the loss")
    if not (isinstance(got, Tensor) and got.requires_grad):
        raise _Mismatch("expected a loss that carries a gradient, got the right value without one, so "
                        "nothing could train on it (build it from the SAE's tensors, no .item() or .detach())")


def _norm_weighted_loss(x: Tensor, x_hat: Tensor, z: Tensor, W_dec: Tensor, l1_coeff: float) -> Tensor:
    rows = z.numel() // z.shape[-1]
    return (x_hat - x).pow(2).mean() + l1_coeff * (z * W_dec.norm(dim=-1)).sum() / rows


def check_norm_weighted_loss(fn: Callable, *, solution: bool = False) -> bool:
    """``fn(x, x_hat, z, W_dec, l1_coeff)`` -> MSE (mean over every entry) + ``l1_coeff`` · (per row,
    the sum over latents of ``z_i · ‖W_dec[i]‖``, averaged over rows): the L1 loss of an SAE whose
    decoder rows are free, not renormalised (Anthropic's April 2024 update)."""
    cases = []
    for i, (lead, n, d, l1) in enumerate([((5,), 16, 8, 0.1), ((2, 3), 12, 4, 0.03), ((1,), 6, 6, 1.0)]):
        g = _gen(30 + i)
        x, x_hat = torch.randn(*lead, d, generator=g), torch.randn(*lead, d, generator=g)
        z = torch.rand(*lead, n, generator=g) * (torch.rand(*lead, n, generator=g) < 0.4)
        W_dec = (torch.randn(n, d, generator=g) * torch.rand(n, 1, generator=g) * 3).requires_grad_()
        text = f"x of shape {tuple(x.shape)}, {n} latents, decoder rows of lengths 0-3, λ = {l1}"
        cases.append(Case(text, (x, x_hat, z, W_dec, l1), _norm_weighted_loss(x, x_hat, z, W_dec, l1).detach(),
                          compare=_compare_loss))
    return _run("norm-weighted L1 loss", fn, cases, solution=solution)


# ============================================================================ chapter 3: TopK SAEs
def _library_threshold(batches: Sequence[Tensor], k: float, momentum: float) -> float:
    """The inference threshold a BatchTopK SAE whose encoder is the identity estimates in training on
    these batches of pre-activations (-1 while no batch has kept a positive value)."""
    n = batches[0].shape[-1]
    sae = BatchTopKSAE(n, n, k, threshold_momentum=momentum)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(n))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.train()
        for pre in batches:
            sae.encode(pre)
    return sae.threshold.item()


def check_batchtopk_threshold(fn: Callable, *, solution: bool = False) -> bool:
    """``fn(batches, k, momentum)`` -> BatchTopK's inference threshold estimated on a sequence of
    batches of pre-activations (B, n): each batch keeps its ``round(k·B)`` largest entries and offers
    the smallest positive one; the estimate starts at the first such value and then moves a fraction
    ``1 - momentum`` of the way to each new one; -1 if no batch has offered a value."""
    g = _gen(140)
    sparse = torch.randn(6, 10, generator=g) - 2.0  # about 2% positive: fewer than k·B = 24
    sparse[0, :3] = torch.tensor([0.9, 0.4, 0.2])
    negative = -torch.rand(4, 10, generator=g) - 0.1
    inputs = [("one batch of shape (5, 10), k = 3", [torch.randn(5, 10, generator=g)], 3, 0.9),
              ("3 batches of shape (8, 12), k = 2, momentum 0.9",
               [torch.randn(8, 12, generator=g) for _ in range(3)], 2, 0.9),
              ("4 batches of shape (4, 10), k = 2.5 (10 kept per batch), momentum 0.5",
               [torch.randn(4, 10, generator=g) + 0.3 for _ in range(4)], 2.5, 0.5),
              ("2 batches, the second with fewer positive entries than k·B = 24 (k = 4, shape (6, 10))",
               [torch.randn(6, 10, generator=g), sparse], 4, 0.8),
              ("3 batches, the first with no positive entry at all (k = 2, shape (4, 10))",
               [negative, torch.randn(4, 10, generator=g), torch.randn(4, 10, generator=g)], 2, 0.7),
              ("only batches with no positive entry (k = 1)", [negative, negative - 1], 1, 0.9)]
    cases = [Case(text, (batches, k, momentum), _library_threshold(batches, k, momentum))
             for text, batches, k, momentum in inputs]
    return _run("BatchTopK's threshold", fn, cases, solution=solution)


def check_auxk(fn: Callable, *, solution: bool = False) -> bool:
    """``fn(sae, x, x_hat, dead_mask)`` -> the AuxK term of a TopK SAE, as ``sae.extra_losses`` gives it."""
    cases = []
    for seed, (d, n, k, k_aux, n_dead, coeff) in enumerate([(8, 32, 2, 4, 10, 1 / 32), (6, 24, 3, 8, 5, 0.5),
                                                            (4, 16, 1, 2, 16, 1.0)]):
        sae = _random_sae(TopKSAE, d, n, 40 + seed, k=k, k_aux=k_aux, auxk_coeff=coeff)
        x = torch.randn(12, d, generator=_gen(50 + seed))
        dead = torch.zeros(n, dtype=torch.bool)
        dead[torch.randperm(n, generator=_gen(60 + seed))[:n_dead]] = True
        with torch.no_grad():
            x_hat, z = sae(x)
            expected = sae.extra_losses(x, x_hat, z, dead)["auxk"]
        text = (f"a TopKSAE({d}, {n}, k={k}, k_aux={k_aux}, auxk_coeff={coeff:.3g}) with {n_dead} dead "
                f"latents, x of shape {tuple(x.shape)}")
        cases.append(Case(text, (sae, x, x_hat, dead), expected))
    return _run("AuxK loss", fn, cases, solution=solution)


# ============================================================================ chapter 4: hierarchy
def _tree_dictionaries() -> list[tuple[str, Tensor, Tensor]]:
    """(description, learned, true) pairs on the paper's tree: faithful, absorbed, anti-absorbed, noisy."""
    tree = paper_tree()
    true = conditionally_orthogonal_dictionary(tree, 20, 0.3, seed=0)
    absorbed, anti = true.clone(), true.clone()
    for child in tree.child_indices:
        absorbed[child] = F.normalize(true[child] + true[tree.parent[child]], dim=0)
        anti[child] = F.normalize(true[child] - true[tree.parent[child]], dim=0)
    noisy = F.normalize(true + 0.15 * torch.randn(true.shape, generator=_gen(70)), dim=1)
    extra = torch.cat([noisy, _scaled_dictionary(12, 20, 71)])[torch.randperm(32, generator=_gen(72))]
    return [("the true dictionary, shuffled", true[torch.randperm(len(true), generator=_gen(73))], true),
            ("a fully absorbed dictionary (each child atom = child + parent, normalised)", absorbed, true),
            ("an 'anti-absorbed' dictionary (each child atom = child − parent, normalised)", anti, true),
            ("a noisy dictionary with 12 extra random atoms, shuffled", extra, true)]


def check_absorption(fn: Callable, *, solution: bool = False) -> bool:
    """``fn(learned, true, parent)`` -> the absorption score, as ``sae_lib.metrics.absorption_score``."""
    parent = paper_tree().parent
    cases = [Case(f"the paper's tree (ρ = 0.3) with {text}", (learned, true, parent),
                  absorption_score(learned, true, parent)) for text, learned, true in _tree_dictionaries()]
    return _run("absorption score", fn, cases, solution=solution)


def check_gram_errors(fn: Callable, *, solution: bool = False) -> bool:
    """``fn(learned, true, sibling_groups, ancestor_pairs)`` -> {"flat": ..., "hierarchical": ...}."""
    tree = paper_tree()
    args = (tree.sibling_groups, tree.ancestor_pairs())
    cases = [Case(f"the paper's tree (ρ = 0.3) with {text}", (learned, true, *args),
                  gram_errors(learned, true, *args)) for text, learned, true in _tree_dictionaries()]
    return _run("flat and hierarchical errors", fn, cases, solution=solution)


# ============================================================================ chapter 5: matching pursuit
def _mp_sae(atoms: Tensor) -> MPSAE:
    """The library's MP-SAE with exactly these atoms and no pre-bias."""
    sae = MPSAE(atoms.shape[1], atoms.shape[0], 1)
    with torch.no_grad():
        sae.W_dec.copy_(atoms)
    return sae


def _correlated_atoms(n: int, d: int, seed: int) -> Tensor:
    """Unit atoms that share a common direction, so greedy steps interact (and atoms get picked twice)."""
    g = _gen(seed)
    return F.normalize(torch.randn(n, d, generator=g) + 1.2 * torch.randn(1, d, generator=g), dim=1)


def check_babel(fn: Callable, *, solution: bool = False) -> bool:
    """``fn(atoms, p)`` -> Tropp's Babel function μ₁(p): the largest sum, over one atom, of its ``p``
    largest |cosines| with the other atoms (as ``sae_lib.metrics.babel``)."""
    angles = torch.arange(5) * 2 * math.pi / 5
    pentagon = 1.7 * torch.stack([angles.cos(), angles.sin()], dim=1)
    signs = torch.where(torch.rand(12, 1, generator=_gen(151)) < 0.5, -1.0, 1.0)
    inputs = [("20 random atoms of random lengths in 6 dimensions, p = 1 (the coherence)",
               _scaled_dictionary(20, 6, 150), 1),
              ("the same 20 atoms, p = 3", _scaled_dictionary(20, 6, 150), 3),
              ("12 correlated atoms, about half of them flipped (negative cosines), p = 2",
               signs * _correlated_atoms(12, 5, 152), 2),
              ("4 orthonormal atoms, p = 3", torch.eye(4), 3),
              ("5 atoms in 2 dimensions (a pentagon, rows of length 1.7), p = 4", pentagon, 4)]
    cases = [Case(text, (atoms, p), babel(atoms, p)) for text, atoms, p in inputs]
    return _run("the Babel function", fn, cases, solution=solution)


def check_mp_threshold(fn: Callable, *, solution: bool = False) -> bool:
    """``fn(x, atoms, k, threshold)`` -> codes (b, n) of matching pursuit with the authors' stopping
    rule: a row stops once ``‖r‖ < threshold·‖x‖``, after at most ``k`` steps (as
    ``MPSAE(..., threshold=threshold)`` with these atoms and no pre-bias)."""
    orthonormal = torch.linalg.qr(torch.randn(6, 6, generator=_gen(160)))[0].T  # rows: unit, orthogonal
    two_atoms = 1.5 * orthonormal[0] + 0.8 * orthonormal[3] + torch.zeros(5, 1)
    two_atoms[2:] = 0.4 * orthonormal[1] + 2.0 * orthonormal[2]
    def unit_atoms(seed: int) -> Tensor:  # spread out, so the pursuit keeps making progress
        return F.normalize(torch.randn(20, 6, generator=_gen(seed)), dim=1)

    inputs = [("x of shape (8, 6), 20 unit atoms, k = 10, threshold 0.3",
               torch.randn(8, 6, generator=_gen(161)), unit_atoms(162), 10, 0.3),
              ("inputs of norm about 25 (shape (6, 6)), 20 unit atoms, k = 10, threshold 0.2",
               10 * torch.randn(6, 6, generator=_gen(163)), unit_atoms(164), 10, 0.2),
              ("inputs of norm about 0.1 (shape (6, 6)), 20 unit atoms, k = 10, threshold 0.2",
               0.04 * torch.randn(6, 6, generator=_gen(165)), unit_atoms(166), 10, 0.2),
              ("sums of 2 of 6 orthonormal atoms, k = 5, threshold 0.05 (2 steps are enough)",
               two_atoms, orthonormal, 5, 0.05),
              ("a threshold too small to be reached: k = 3 is the cap (x (5, 6), 20 unit atoms)",
               torch.randn(5, 6, generator=_gen(167)), unit_atoms(168), 3, 0.01)]
    cases = []
    for text, x, atoms, k, threshold in inputs:
        sae = _mp_sae(atoms)
        sae.threshold = threshold
        with torch.no_grad():
            cases.append(Case(text, (x, atoms, k, threshold), sae.encode(x, k=k)))
    return _run("pursuit with a stopping rule", fn, cases, solution=solution)


# ============================================================================ chapters 6-7: a language model
@lru_cache(maxsize=1)
def exercise_lm():
    """The shipped tiny LM (frozen) and a few of its sequences: what the chapter 6-7 exercises run on."""
    from .tiny_lm import load_tiny_lm

    loaded = load_tiny_lm()
    tokens, _ = loaded.extras["language"].sample(4, 24, seed=0)
    return loaded.model, tokens


def exercise_sae(model, family: str = "topk", *, seed: int = 0, **settings):
    """A small untrained SAE (4 latents per dimension) that fits ``model``'s residual stream: enough to
    check splicing code, which must work on any weights."""
    d = model.cfg.d_model
    if family == "topk":
        return TopKSAE(d, 4 * d, settings.pop("k", 8), seed=seed, **settings)
    return ReLUSAE(d, 4 * d, seed=seed, **settings)


def check_splice_hook(fn: Callable, *, solution: bool = False) -> bool:
    """``fn(sae)`` -> a TransformerLens hook function that hands on the SAE's reconstruction."""
    from .splicing import run_spliced

    model, tokens = exercise_lm()
    cases = []
    for hook, sae in (("blocks.1.hook_resid_pre", exercise_sae(model, seed=1)),
                      ("blocks.0.hook_resid_post", exercise_sae(model, "relu", seed=2))):
        with torch.no_grad():
            expected = run_spliced(model, tokens, hook, sae).logits

        def logits_with(make_hook, sae=sae, hook=hook):
            with torch.no_grad():
                return model.run_with_hooks(tokens, fwd_hooks=[(hook, make_hook(sae))])

        text = f"the tiny LM's logits with a random {type(sae).__name__} spliced in at {hook}"
        cases.append(Case(text, (sae,), expected, call=logits_with))
    return _run("a splice hook", fn, cases, solution=solution)


def check_ce_increase(fn: Callable, *, solution: bool = False) -> bool:
    """``fn(model, sae, tokens, hook)`` -> next-token cross-entropy with the splice minus without it."""
    from .splicing import evaluate_spliced, identity_sae

    model, tokens = exercise_lm()
    cases = []
    for text, hook, sae in (("a random TopKSAE", "blocks.1.hook_resid_pre", exercise_sae(model, seed=3)),
                            ("a random ReLUSAE", "blocks.0.hook_resid_pre", exercise_sae(model, "relu", seed=4)),
                            ("an SAE that reconstructs exactly", "blocks.1.hook_resid_pre",
                             identity_sae(model.cfg.d_model))):
        expected = evaluate_spliced(model, sae, tokens, hook, progress=False)["ce_increase"]
        cases.append(Case(f"the tiny LM with {text} at {hook}", (model, sae, tokens, hook), expected))
    return _run("CE-loss increase", fn, cases, solution=solution)


def check_kl(fn: Callable, *, solution: bool = False) -> bool:
    """``fn(logits_original, logits_spliced)`` -> KL(original ‖ spliced), summed over the vocabulary,
    averaged over tokens."""
    from .splicing import kl_divergence

    base = torch.randn(2, 5, 11, generator=_gen(100))
    peaked = 4 * torch.randn(3, 7, generator=_gen(102))
    inputs = [("logits of shape (batch 2, positions 5, vocabulary 11)", base,
               base + 0.8 * torch.randn(2, 5, 11, generator=_gen(101))),
              ("peaked distributions, logits of shape (3, 7)", peaked, torch.randn(3, 7, generator=_gen(103))),
              ("identical logits", base, base.clone())]
    cases = [Case(text, (p, q), kl_divergence(p, q)) for text, p, q in inputs]
    return _run("the KL term", fn, cases, solution=solution)


def check_e2e_ds_loss(fn: Callable, *, solution: bool = False) -> bool:
    """``fn(model, sae, tokens, hook, beta)`` -> ½·KL + (β/n)·Σ downstream MSE + the SAE's sparsity term."""
    from .e2e import EndToEnd

    model, tokens = exercise_lm()
    cases = []
    # Hooks in the first of the tiny LM's two blocks: later residual streams exist to reconstruct.
    for hook, beta, sae in (("blocks.0.hook_resid_pre", 2.5, exercise_sae(model, "relu", seed=5, l1_coeff=0.01)),
                            ("blocks.0.hook_resid_mid", 0.05, exercise_sae(model, "relu", seed=6, l1_coeff=0.1))):
        with torch.no_grad():
            terms, _ = EndToEnd(model, hook, kl_coeff=0.5, downstream_coeff=beta)(sae, tokens, None)
        cases.append(Case(f"the tiny LM with a random ReLUSAE (l1_coeff {sae.l1_coeff}) at {hook}, β = {beta}",
                          (model, sae, tokens, hook, beta), sum(terms.values())))
    return _run("the e2e+ds loss", fn, cases, solution=solution)


# ============================================================================ chapter 8: two modalities
def _two_modality_codes(n_images: int, n_texts: int, n_latents: int, seed: int) -> tuple[Tensor, Tensor]:
    """Non-negative sparse codes for images then texts; latent 0 never fires, latent 1 only on images."""
    g = _gen(seed)
    n = n_images + n_texts
    z = torch.rand(n, n_latents, generator=g) * (torch.rand(n, n_latents, generator=g) < 0.4)
    is_image = torch.arange(n) < n_images
    z[:, 0] = 0
    z[:, 1] = torch.where(is_image, 1.0 + torch.rand(n, generator=g), torch.zeros(n))
    return z, is_image


def check_modality_score(fn: Callable, *, solution: bool = False) -> bool:
    """``fn(z, is_image)`` -> per latent, E_img[z] / (E_img[z] + E_txt[z]); NaN for a latent that never fires."""
    inputs = [("codes of 10 images and 10 captions, 6 latents", *_two_modality_codes(10, 10, 6, 110)),
              ("codes of 3 images and 15 captions (five per image), 8 latents", *_two_modality_codes(3, 15, 8, 111)),
              ("codes of 12 images and 2 captions, 4 latents", *_two_modality_codes(12, 2, 4, 112))]
    cases = [Case(text + " (latent 0 never fires, latent 1 fires only on images)", (z, is_image),
                  modality_score(z, is_image)) for text, z, is_image in inputs]
    return _run("modality score", fn, cases, solution=solution)


def _concept_codes(n_pairs: int, seed: int, *, shared: bool = True) -> tuple[Tensor, Tensor, list[str]]:
    """Codes of ``n_pairs`` matched pairs (image rows, caption rows, 8 atoms) and each pair's colour.

    Atoms 0-2 switch on for red, green and blue in pictures (and in captions when ``shared``); atom 3
    never varies (std 0); atom 4 fires on every row, strongly and noisily (it swamps a profile that is
    not standardised); atom 5 is switched *off* by red (where colour is carried); atoms 6-7 are noise. The caption tower scales
    every atom by its own factor (0.2 to 5), so only a per-modality standardisation cancels it."""
    g = _gen(seed)
    colours = ("red", "green", "blue")
    labels = [colours[i] for i in torch.randint(0, 3, (n_pairs,), generator=g).tolist()]
    red = torch.tensor([label == "red" for label in labels])

    def side(carries_colour: bool) -> Tensor:
        z = torch.rand(n_pairs, 8, generator=g) * (torch.rand(n_pairs, 8, generator=g) < 0.3)
        if carries_colour:
            for j, colour in enumerate(colours):
                on = torch.tensor([label == colour for label in labels])
                z[on, j] += 0.5 + torch.rand(int(on.sum()), generator=g)
        z[:, 3] = 0.7
        z[:, 4] = 20 + 10 * torch.rand(n_pairs, generator=g)
        off = red if carries_colour else torch.zeros(n_pairs, dtype=torch.bool)
        z[:, 5] = torch.where(off, torch.zeros(n_pairs), 1 + torch.rand(n_pairs, generator=g))
        return z

    z_image = side(True)
    z_caption = side(shared) * torch.exp(torch.empty(8).uniform_(-1.6, 1.6, generator=g))
    return z_image, z_caption, labels


def check_concept_overlap(fn: Callable, *, solution: bool = False) -> bool:
    """``fn(z_image, z_caption, labels, value)`` -> the cosine between ``value``'s atom profiles in
    pictures and in captions (row i of each is pair i, ``labels[i]`` its value), each profile the
    mean code with the value minus without it, per atom, divided by the atom's standard deviation
    over that modality's rows (0 for an atom that never varies): ``sharing.concept_overlap``."""
    from .sharing import concept_overlap

    inputs = []
    for text, (z_image, z_caption, labels), value in (
            ("60 pairs, colour shared by both towers, value 'green'", _concept_codes(60, 170), "green"),
            ("60 pairs, value 'red' (it switches atom 5 off in both modalities)", _concept_codes(60, 171), "red"),
            ("80 pairs, colour in the pictures only (captions do not carry it), value 'blue'",
             _concept_codes(80, 172, shared=False), "blue"),
            ("25 pairs, value 'red'", _concept_codes(25, 173), "red")):
        inputs.append((text, z_image, z_caption, labels, value))
    z_image, _, labels = _concept_codes(30, 174)
    inputs.append(("30 pairs whose caption codes never vary (an empty caption profile), value 'green'",
                   z_image, torch.full_like(z_image, 0.5), labels, "green"))
    cases = [Case(text + " (atom 3 never varies)", (zi, zc, labels, value),
                  concept_overlap(zi, zc, labels, labels, value))
             for text, zi, zc, labels, value in inputs]
    return _run("concept overlap", fn, cases, solution=solution)


# ============================================================================ chapter 9: a real model
def _absorption_words(seed: int, n_words: int = 48, d: int = 12, n_latents: int = 30):
    """Words that all start with one letter, probe direction ``e0``, coded by a dictionary whose latent
    0 is the letter's main latent and whose latents 1-3 are word latents leaning towards the probe
    (cosines 0.6, 0.3 and 0.015: below the 0.025 that absorption needs). Each word is carried by the main latent or by one word latent, plus
    weak background latents and noise: some words are absorbed, some are not."""
    g = _gen(seed)
    atoms = F.normalize(torch.randn(n_latents, d, generator=g), dim=1)
    direction = torch.zeros(d)
    direction[0] = 1.0
    atoms[0] = direction
    for i, cosine in zip((1, 2, 3), (0.6, 0.3, 0.015)):
        atoms[i] = cosine * direction + math.sqrt(1 - cosine**2) * F.one_hot(torch.tensor(i), d).float()
    codes = torch.zeros(n_words, n_latents)
    carrier = torch.randint(4, (n_words,), generator=g)
    codes[torch.arange(n_words), carrier] = 1 + 2 * torch.rand(n_words, generator=g)
    background = torch.randint(4, n_latents, (n_words, 2), generator=g)
    codes.scatter_(1, background, 0.3 * torch.rand(n_words, 2, generator=g))
    x = codes @ atoms + 0.01 * torch.randn(n_words, d, generator=g)
    return x, codes, direction, atoms


def check_full_absorption(fn: Callable, *, solution: bool = False) -> bool:
    """``fn(x, codes, direction, atoms, main)`` -> (n_words,) bool: which words are fully absorbed, by
    SAEBench's rule (as ``sae_lib.absorption.word_absorption(...).full``)."""
    from .absorption import word_absorption

    cases = []
    for text, seed, main, scale in (("48 words, main latent [0]", 0, [0], 1.0),
                                    ("48 words, main latents [0, 5] (a split)", 1, [0, 5], 1.0),
                                    ("48 words, the probe direction not of unit length", 2, [0], 3.0)):
        x, codes, direction, atoms = _absorption_words(seed)
        expected = word_absorption(x, codes, scale * direction, atoms, main).full
        cases.append(Case(f"{text} ({int(expected.sum())} absorbed)", (x, codes, scale * direction, atoms, main),
                          expected))
    return _run("full absorption", fn, cases, solution=solution)


def check_explanation_auroc(fn: Callable, *, solution: bool = False) -> bool:
    """``fn(keys, counts, tokens, fires)`` -> the AUROC of a token-set explanation: each token scores the
    count of its key in the explanation (0 if absent), against where the latent fires."""
    from .interp_proxy import TokenExplanation, auroc

    g = _gen(90)
    tokens = torch.randint(20, (6, 30), generator=g)
    lexical = torch.isin(tokens, torch.tensor([3, 7])) & (torch.rand(6, 30, generator=g) < 0.9)
    noisy = lexical | (torch.rand(6, 30, generator=g) < 0.05)
    cases = []
    for text, keys, counts, fires in (
            ("a lexical latent explained by its two tokens", (3, 7), (30, 12), lexical),
            ("the same latent with a few stray firings, one key wrong", (3, 11), (25, 4), noisy),
            ("an explanation whose tokens never occur", (50, 51), (9, 9), lexical)):
        score = TokenExplanation(-1, "token", keys, counts).score(tokens)
        cases.append(Case(text, (keys, counts, tokens, fires), auroc(score, fires)))
    return _run("explanation AUROC", fn, cases, solution=solution)
