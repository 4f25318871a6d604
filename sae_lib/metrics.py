"""How good is an SAE? Sparsity, reconstruction, dead latents, and recovery of known atoms.

Every score dict of the library uses one set of names (:data:`SCORE_NAMES`): :func:`evaluate`, the tree
recipes' ``tree_scores``, ``run_in_noisy_world``, the real model's ``HeldOut.evaluate`` and the shipped
full-profile results. Held-out data always means fresh samples drawn with
:func:`~sae_lib.synthetic.held_out_seed` (synthetic data) or held-out documents (real text).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from .saes import SAE, ReLUSAE, dense_codes
from .util import is_integer, positive_int, real_number


SCORE_NAMES = {
    "fvu": "fraction of variance unexplained on held-out data",
    "l0": "mean number of active latents per input",
    "dead": "latents that never fire on the held-out data",
    "alive": "latents that fire at least once on it",
    "mean_cos": "mean cosine of the one-to-one matched atoms (Hungarian matching, :func:`match_atoms`)",
    "min_cos": "the worst matched atom's cosine",
    "found_at_0.9": "share of true atoms matched at cosine ≥ 0.9",
    "ce_increase": "CE loss with the SAE spliced in, minus the model's own (real models)",
}
"""The score names, each with what it means. Tables in the chapters may relabel them for display."""


def l0(z: Tensor) -> float:
    """Mean number of non-zero codes per input."""
    return (z != 0).sum(-1).float().mean().item()


def total_variance(x: Tensor) -> Tensor:
    """``Σ ‖x_i − mean‖²`` over the rows of ``x``: the denominator of FVU. An error when it is zero
    (fewer than two rows, or every row the same): FVU would be 0/0 or x/0, and mean nothing."""
    x = x.reshape(-1, x.shape[-1])
    if len(x) < 2:
        raise ValueError(f"FVU needs at least 2 rows of data to have a variance; got {len(x)}")
    total = (x - x.mean(0)).pow(2).sum()
    if not total.item() > 0:
        raise ValueError(f"the data has no variance (all {len(x)} rows are equal), so FVU is undefined; use the MSE")
    return total


def fvu(x: Tensor, x_hat: Tensor) -> float:
    """Fraction of variance unexplained: squared error over the data's total variance (0 is perfect,
    1 is no better than always predicting the mean)."""
    x, x_hat = x.reshape(-1, x.shape[-1]), x_hat.reshape(-1, x.shape[-1])
    return ((x - x_hat).pow(2).sum() / total_variance(x)).item()


def r_squared(x: Tensor, x_hat: Tensor) -> float:
    """Explained variance, ``1 - FVU``."""
    return 1.0 - fvu(x, x_hat)


def fire_counts(z: Tensor) -> Tensor:
    """How many rows each latent fires on (is non-zero) in codes ``z`` (..., n_latents): the one count
    behind alive/dead latents and firing rates, whichever loop produced the codes."""
    return (z != 0).reshape(-1, z.shape[-1]).sum(0)


@torch.no_grad()
def evaluate(sae: SAE, x: Tensor, *, batch_size: int = 4096, counts: bool = False,
             **forward_kwargs) -> dict[str, float]:
    """MSE, FVU, R², L0 and alive/dead latent counts of ``sae`` over all of ``x`` (in batches).

    Extra keyword arguments go to the SAE's forward, e.g. ``evaluate(topk_sae, x, k=32)``.
    A latent is alive if it fires on at least one input of ``x``. ``counts=True`` adds
    ``"fire_counts"``: how many inputs each latent fired on (a tensor; divide by ``len(x)`` for the
    firing density that feature-density histograms show).
    """
    device = sae.W_dec.device
    sq_err, nonzeros = 0.0, 0.0
    fires = torch.zeros(sae.n_latents, dtype=torch.long, device=device)
    batch_size = positive_int("batch_size", batch_size)
    x = x.reshape(-1, sae.d_in)
    total_var = total_variance(x).item()  # first: fails clearly on fewer than 2 rows or constant data
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size].to(device, sae.W_dec.dtype)
        x_hat, z = sae(batch, **forward_kwargs)
        sq_err += (batch - x_hat).pow(2).sum().item()
        counts_here = fire_counts(z)
        nonzeros += counts_here.sum().item()
        fires += counts_here
    alive = int((fires > 0).sum())
    extra = {"fire_counts": fires.cpu()} if counts else {}
    return {
        "mse": sq_err / x.numel(),
        "fvu": sq_err / total_var,
        "r2": 1 - sq_err / total_var,
        "l0": nonzeros / len(x),
        "alive": alive,
        "dead": sae.n_latents - alive,
        **extra,
    }


@torch.no_grad()
def firing_rates(sae: SAE, x: Tensor, *, batch_size: int = 4096, **encode_kwargs) -> Tensor:
    """The share of the rows of ``x`` on which each latent fires: what feature-density histograms show
    (0 for a latent that is dead on this data; how many rows is the window that "dead" refers to)."""
    x = x.reshape(-1, sae.d_in)
    fires = torch.zeros(sae.n_latents, dtype=torch.long, device=sae.W_dec.device)
    for start in range(0, len(x), positive_int("batch_size", batch_size)):
        z = sae.encode(x[start : start + batch_size].to(sae.W_dec.device, sae.W_dec.dtype), **encode_kwargs)
        fires += fire_counts(z)
    return fires.cpu().double() / len(x)


def bootstrap_interval(statistic, *samples: Tensor, n_resamples: int = 2_000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval for ``statistic(*samples)``: the samples (one value per unit, e.g.
    per held-out sequence, all of the same length) are resampled together, with replacement, so a
    difference of two paired measurements keeps its pairing."""
    n = len(samples[0])
    if n < 2 or any(len(s) != n for s in samples):
        raise ValueError(f"bootstrap needs samples of one length >= 2, got lengths {[len(s) for s in samples]}")
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(n, (positive_int("n_resamples", n_resamples), n), generator=generator)
    values = torch.tensor([float(statistic(*(torch.as_tensor(s)[i] for s in samples))) for i in index])
    tail = (1 - real_number("level", level, low=0, high=1, low_open=True, high_open=True)) / 2
    return values.quantile(tail).item(), values.quantile(1 - tail).item()


def cosine_matrix(a: Tensor, b: Tensor) -> Tensor:
    """All cosine similarities between the rows of ``a`` and the rows of ``b``."""
    return F.normalize(a.detach().float(), dim=1) @ F.normalize(b.detach().float(), dim=1).T


@dataclass
class AtomMatch:
    """A one-to-one pairing of true atoms with learned atoms (Hungarian algorithm on cosine)."""

    true_index: Tensor
    learned_index: Tensor
    cosine: Tensor  # cosine of each matched pair

    @property
    def mean(self) -> float:
        return self.cosine.mean().item()

    def fraction_above(self, threshold: float) -> float:
        """Share of true atoms whose matched learned atom has cosine ≥ ``threshold``."""
        return (self.cosine >= threshold).float().mean().item()


def match_atoms(learned: Tensor, true: Tensor) -> AtomMatch:
    """Pair each true atom with a distinct learned atom so the summed cosine is as large as possible.

    Needs at least as many learned atoms as true ones. Signs count: SAE codes are non-negative, so
    an atom pointing the opposite way is a different feature, not the same one.
    """
    if learned.ndim != 2 or true.ndim != 2 or learned.shape[1] != true.shape[1]:
        raise ValueError(f"need two (n, d) matrices with the same d; got {tuple(learned.shape)} and {tuple(true.shape)}")
    if len(learned) < len(true):
        raise ValueError(f"cannot match {len(true)} true atoms with only {len(learned)} learned atoms")
    cos = cosine_matrix(true, learned)
    rows, cols = linear_sum_assignment(cos.cpu().numpy(), maximize=True)
    rows, cols = torch.as_tensor(rows), torch.as_tensor(cols)
    return AtomMatch(true_index=rows, learned_index=cols, cosine=cos[rows, cols].cpu())


def mean_max_cosine(learned: Tensor, true: Tensor) -> float:
    """MMCS: for each true atom, the best cosine any learned atom reaches, averaged. Unlike
    :func:`match_atoms` it lets one learned atom stand in for several true ones."""
    return cosine_matrix(true, learned).max(dim=1).values.mean().item()


@torch.no_grad()
def feature_response(sae: SAE, dictionary: Tensor, magnitude: float) -> Tensor:
    """How much of a lone feature comes back: feed each true feature alone, ``x = magnitude · d_i``,
    and return ``<x_hat, d_i> / magnitude`` for every feature (1 = faithful, < 1 = shrunk, 0 = missed).

    Measured on the reconstruction, not on one latent's code, so it does not care how the SAE splits a
    feature across latents; this isolates the shrinkage an L1 penalty causes.
    """
    magnitude = real_number("magnitude", magnitude, low=0, low_open=True)
    atoms = dictionary.to(sae.W_dec.device, sae.W_dec.dtype)
    x_hat, _ = sae(magnitude * atoms)
    return ((x_hat * atoms).sum(-1) / magnitude).cpu()


# ---------------------------------------------------------------- hierarchy (chapters 4-5)
def aligned_atoms(learned: Tensor, true: Tensor) -> Tensor:
    """The learned atoms matched one-to-one to the true ones (:func:`match_atoms`), unit-normalised and
    put in the true atoms' order: row ``i`` is the learned atom standing for true feature ``i``."""
    match = match_atoms(learned, true)
    order = torch.empty_like(match.learned_index)
    order[match.true_index] = match.learned_index
    return F.normalize(learned.detach().float(), dim=1)[order].cpu()


def absorption_score(learned: Tensor, true: Tensor, parent: Sequence[int]) -> float:
    """Mean |cosine| between each child's matched learned atom and its true parent's direction.

    ``parent[i]`` is feature ``i``'s parent (``-1`` for none), e.g. ``ConceptTree.parent``. The true
    child is orthogonal to its parent, so a faithful dictionary scores 0; a learned child atom that has
    absorbed its parent (it also reconstructs the parent whenever the child fires) scores up to 1.
    Lower is better. The paper averages the signed cosine; we average its absolute value, so that a
    child leaning away from its parent counts as the departure from orthogonality it is, instead of
    cancelling a sibling that leans towards it (+0.5 and −0.5 would average to a "perfect" 0). When
    every child leans towards its parent, as absorption does, the two definitions agree.
    """
    if len(parent) != len(true):
        raise ValueError(f"parent has {len(parent)} entries but there are {len(true)} true atoms")
    pairs = [(p, i) for i, p in enumerate(parent) if p >= 0]
    if not pairs:
        raise ValueError("absorption needs at least one feature with a parent")
    atoms = aligned_atoms(learned, true)
    true = F.normalize(true.detach().float(), dim=1).cpu()
    return torch.stack([atoms[c] @ true[p] for p, c in pairs]).abs().mean().item()


def gram_errors(learned: Tensor, true: Tensor, sibling_groups: Sequence[Sequence[int]],
                ancestor_pairs: Sequence[tuple[int, int]]) -> dict[str, float]:
    """How far the learned dictionary's geometry is from the true one, split by the tree's levels.

    With ``G`` the true atoms' Gram matrix (cosines) and ``Ĝ`` that of the learned atoms matched to them
    (:func:`aligned_atoms`), both errors are mean absolute differences ``|Ĝ_ij - G_ij|``:

    * ``flat``: over pairs of siblings (same parent, or both top-level), the within-level correlations;
    * ``hierarchical``: over (ancestor, descendant) pairs, which should stay exactly orthogonal.

    Pass ``ConceptTree.sibling_groups`` and ``ConceptTree.ancestor_pairs()``.
    """
    atoms = aligned_atoms(learned, true)
    g_true, g_learned = cosine_matrix(true, true).cpu(), atoms @ atoms.T
    diff = (g_learned - g_true).abs()
    sibling_pairs = [(i, j) for group in sibling_groups for a, i in enumerate(group) for j in group[a + 1:]]
    result = {}
    for name, pairs in (("flat", sibling_pairs), ("hierarchical", list(ancestor_pairs))):
        if not pairs:
            raise ValueError(f"no pairs for the {name} error: the tree needs siblings and parents")
        rows, cols = zip(*pairs)
        result[name] = diff[list(rows), list(cols)].mean().item()
    return result


@torch.no_grad()
def error_vs_k(sae: SAE, x: Tensor, ks: Sequence[int]) -> list[float]:
    """FVU of ``sae`` on ``x`` when its code may use ``k`` latents, for each ``k`` in ``ks``.

    TopK and MP SAEs take ``k`` directly (``sae(x, k=k)``). A ReLU SAE has no ``k``: it keeps its ``k``
    largest codes and zeroes the rest, so past its own L0 its error can only stay the same.
    """
    errors = []
    for k in ks:
        if isinstance(sae, ReLUSAE):
            z = sae.encode(x)
            k = sae.check_k(k, k)
            x_hat = sae.decode(dense_codes(*z.topk(k, dim=-1), sae.n_latents))
        else:
            x_hat, _ = sae(x, k=k)
        errors.append(fvu(x, x_hat))
    return errors


def max_cosine_within(atoms: Tensor, *, chunk: int = 4096) -> Tensor:
    """Each atom's largest cosine similarity to any *other* atom of the same dictionary. Low values
    everywhere mean a nearly orthogonal dictionary; values near 1 mean near-duplicate atoms. Computed
    in blocks of rows, so a GPT-2-sized dictionary (46k atoms) never needs its whole Gram matrix."""
    atoms = F.normalize(atoms.detach().float(), dim=1)
    if len(atoms) < 2:
        raise ValueError(f"need at least two atoms to compare, got {len(atoms)}")
    best = []
    for start in range(0, len(atoms), chunk):
        cos = atoms[start : start + chunk] @ atoms.T
        rows = torch.arange(len(cos), device=cos.device)
        cos[rows, rows + start] = -float("inf")  # an atom is not its own neighbour
        best.append(cos.max(dim=1).values)
    return torch.cat(best)


def max_cosine_across(atoms: Tensor, other: Tensor, *, chunk: int = 4096) -> Tensor:
    """For each atom of one dictionary, its largest cosine similarity to any atom of ``other`` (for
    example another seed's, or another objective's dictionary): near 1 means "the other one has it too"."""
    if atoms.ndim != 2 or other.ndim != 2 or atoms.shape[1] != other.shape[1]:
        raise ValueError(f"need two (n, d) dictionaries with the same d; got {tuple(atoms.shape)} and {tuple(other.shape)}")
    atoms, other = F.normalize(atoms.detach().float(), dim=1), F.normalize(other.detach().float(), dim=1)
    return torch.cat([(atoms[s : s + chunk] @ other.T).max(dim=1).values for s in range(0, len(atoms), chunk)])


def frontier_at(points, l0: float, *, y: str = "ce_increase") -> float | None:
    """Read a sparsity frontier at a given L0: ``points`` are dicts with ``"l0"`` and ``y`` (one per
    SAE of a sweep); the value is interpolated linearly in log L0 between the two points around ``l0``.
    ``None`` when ``l0`` lies outside the sweep's range: comparing there would be extrapolation."""
    curve = sorted((p["l0"], p[y]) for p in points)
    if not curve or not curve[0][0] <= l0 <= curve[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
        if x0 <= l0 <= x1:
            t = 0.0 if x1 == x0 else (math.log(l0) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + t * (y1 - y0)
    return curve[0][1]  # a single point, exactly at l0


# ----------------------------------------------------------------------------- shared image-text spaces
def modality_score(z: Tensor, is_image: Tensor) -> Tensor:
    """Per latent, the share of its energy spent on images: ``E_img[z_i] / (E_img[z_i] + E_txt[z_i])``.

    1 means the latent fires only for images, 0 only for text, 0.5 equally for both. Energies are means
    within each modality, so the score does not depend on how many rows each modality has (a set with
    five captions per image gives the same score as its balanced version). Latents that never fire get
    NaN. Codes must be non-negative (TopK and MP codes are).
    """
    if z.ndim != 2:
        raise ValueError(f"codes must be (n_inputs, n_latents); got shape {tuple(z.shape)}")
    is_image = torch.as_tensor(is_image, dtype=torch.bool, device=z.device)
    if is_image.shape != (len(z),):
        raise ValueError(f"is_image must have one entry per row of the codes ({len(z)}); got shape {tuple(is_image.shape)}")
    if bool(is_image.all()) or not bool(is_image.any()):
        raise ValueError("the modality score needs codes from both modalities (some images and some text)")
    if bool((z < 0).any()):
        raise ValueError("the modality score needs non-negative codes (energy cannot be negative)")
    image_energy, text_energy = z[is_image].float().mean(0), z[~is_image].float().mean(0)
    total = image_energy + text_energy
    return torch.where(total > 0, image_energy / total.clamp_min(1e-30), torch.full_like(total, float("nan")))


def effective_rank(matrix: Tensor) -> float:
    """Roy & Vetterli's effective rank: ``exp`` of the entropy of the normalised singular values.

    It is ``r`` for a matrix with ``r`` equal non-zero singular values and falls smoothly as the
    spectrum concentrates, so it counts how many independent directions really matter.
    """
    if matrix.ndim != 2:
        raise ValueError(f"effective_rank needs a matrix; got shape {tuple(matrix.shape)}")
    s = torch.linalg.svdvals(matrix.double())
    if s.sum() == 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def coactivation(z: Tensor) -> Tensor:
    """``C[i, j]`` = fraction of inputs on which latents ``i`` and ``j`` both fire (diagonal: firing rates)."""
    if z.ndim != 2:
        raise ValueError(f"codes must be (n_inputs, n_latents); got shape {tuple(z.shape)}")
    fires = (z != 0).float()
    return fires.T @ fires / len(z)


def babel(atoms: Tensor, p: int) -> float:
    """Tropp's Babel function ``μ₁(p)``: the largest total |cosine| between one atom and ``p`` others.

    ``μ₁(1)`` is the dictionary's coherence (its most similar pair). Small ``μ₁(p)`` means any ``p + 1``
    atoms are close to orthogonal, the condition under which a one-shot (linear) encoder can read each
    of them without interference from the others.
    """
    if atoms.ndim != 2:
        raise ValueError(f"atoms must be (n_atoms, d); got shape {tuple(atoms.shape)}")
    if not is_integer(p) or not 1 <= p < len(atoms):
        raise ValueError(f"p must be an integer in [1, n_atoms - 1 = {len(atoms) - 1}], got {p!r}")
    p = int(p)
    unit = F.normalize(atoms.detach().float(), dim=1)
    worst = 0.0
    for start in range(0, len(unit), 2048):  # in blocks, so 10^4+ atoms fit in memory
        cos = (unit[start : start + 2048] @ unit.T).abs()
        cos[torch.arange(len(cos)), torch.arange(start, start + len(cos))] = 0.0
        worst = max(worst, cos.topk(p, dim=1).values.sum(1).max().item())
    return worst


def support_babel(atoms: Tensor, z: Tensor) -> Tensor:
    """The Babel function restricted to the atoms each input actually uses: for each row of ``z``,
    ``max_{i ∈ S} Σ_{j ∈ S, j ≠ i} |cos(atom_i, atom_j)|`` over its support ``S`` (0 if ``|S| < 2``).
    Compare with :func:`babel` at ``p = |S| - 1``, the worst case over the whole dictionary."""
    if atoms.ndim != 2 or z.ndim != 2 or z.shape[1] != atoms.shape[0]:
        raise ValueError(f"need atoms (n_atoms, d) and codes (n_inputs, n_atoms); got {tuple(atoms.shape)} and {tuple(z.shape)}")
    unit = F.normalize(atoms.detach().float(), dim=1)
    width = int((z != 0).sum(1).max()) if len(z) else 0
    if width < 2:
        return torch.zeros(len(z))
    out = []
    for block in z.split(4096):  # each row's support, padded with zero-valued slots that add nothing
        values, support = block.abs().topk(width, dim=1)
        chosen = unit[support] * (values != 0).unsqueeze(-1)
        cos = (chosen @ chosen.transpose(1, 2)).abs()
        cos = cos - torch.diag_embed(torch.diagonal(cos, dim1=1, dim2=2))
        out.append(cos.sum(2).max(1).values.cpu())
    return torch.cat(out)


def linear_probe_accuracy(x: Tensor, labels, *, ridge: float = 0.1) -> float:
    """Leave-one-out accuracy of a ridge-regression probe that reads a label from ``x`` linearly.

    One-vs-rest least squares on centred, scale-normalised features, with the exact leave-one-out
    predictions of ridge regression, ``(ŷ_i - h_ii y_i) / (1 - h_ii)`` (``h`` the hat matrix): no refits.
    Chance is about one over the number of classes. (Centring uses all rows, a negligible leak.)
    """
    labels = list(labels)
    if x.ndim != 2 or len(labels) != len(x):
        raise ValueError(f"need (n, d) features and n labels; got {tuple(x.shape)} and {len(labels)} labels")
    names = sorted(set(labels))
    if len(names) < 2:
        raise ValueError("a probe needs at least two classes")
    if not ridge > 0:
        raise ValueError(f"ridge must be positive, got {ridge!r}")
    y = torch.tensor([[float(label == name) for name in names] for label in labels], dtype=torch.float64)
    y = y - y.mean(0)
    features = x.detach().double().cpu()
    features = features - features.mean(0)
    features = features / features.norm(dim=1).mean().clamp_min(1e-12)
    kernel = features @ features.T
    hat = kernel @ torch.linalg.inv(kernel + ridge * torch.eye(len(x), dtype=torch.float64))
    h = hat.diagonal().unsqueeze(1)
    held_out = (hat @ y - h * y) / (1 - h)
    return float((held_out.argmax(1) == y.argmax(1)).double().mean())
