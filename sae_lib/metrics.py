"""How good is an SAE? Sparsity, reconstruction, dead latents, and recovery of known atoms."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from .saes import SAE


def l0(z: Tensor) -> float:
    """Mean number of non-zero codes per input."""
    return (z != 0).sum(-1).float().mean().item()


def fvu(x: Tensor, x_hat: Tensor) -> float:
    """Fraction of variance unexplained: squared error over the data's total variance (0 is perfect,
    1 is no better than always predicting the mean)."""
    x, x_hat = x.reshape(-1, x.shape[-1]), x_hat.reshape(-1, x.shape[-1])
    return ((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()).item()


def r_squared(x: Tensor, x_hat: Tensor) -> float:
    """Explained variance, ``1 - FVU``."""
    return 1.0 - fvu(x, x_hat)


@torch.no_grad()
def evaluate(sae: SAE, x: Tensor, *, batch_size: int = 4096, **forward_kwargs) -> dict[str, float]:
    """MSE, FVU, R², L0 and alive/dead latent counts of ``sae`` over all of ``x`` (in batches).

    Extra keyword arguments go to the SAE's forward, e.g. ``evaluate(topk_sae, x, k=32)``.
    A latent is alive if it fires on at least one input of ``x``.
    """
    device = sae.W_dec.device
    sq_err, nonzeros, fired = 0.0, 0.0, torch.zeros(sae.n_latents, dtype=torch.bool, device=device)
    x = x.reshape(-1, sae.d_in)
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size].to(device)
        x_hat, z = sae(batch, **forward_kwargs)
        sq_err += (batch - x_hat).pow(2).sum().item()
        nonzeros += (z != 0).sum().item()
        fired |= (z != 0).any(0)
    total_var = (x - x.mean(0)).pow(2).sum().item()
    alive = int(fired.sum())
    return {
        "mse": sq_err / x.numel(),
        "fvu": sq_err / total_var,
        "r2": 1 - sq_err / total_var,
        "l0": nonzeros / len(x),
        "alive": alive,
        "dead": sae.n_latents - alive,
    }


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
