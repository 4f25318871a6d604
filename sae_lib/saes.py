"""Sparse autoencoder families that share one shape.

Every SAE maps activations ``x`` of shape ``(..., d_in)`` to codes ``z`` of shape ``(..., n_latents)``
and back with the same linear decoder::

    x_hat = z @ atoms + b_dec        atoms = rows of W_dec, each of unit length

The families differ only in how they choose ``z``:

* :class:`ReLUSAE`: ``z = ReLU(W_enc (x - b_dec) + b_enc)``, made sparse by an L1 penalty.
* :class:`TopKSAE`: keep the ``k`` largest pre-activations (Gao et al. 2024), plus the AuxK loss.
* :class:`MPSAE`: ``k`` greedy matching-pursuit steps over the tied dictionary (Costa et al. 2025).

Decoding always goes through :meth:`SAE.atoms`, the row-normalised ``W_dec``. So ``|z_i|`` is exactly
the size of latent ``i``'s contribution, whatever the raw parameter's scale; the trainer also renormalises
the parameter after each step so ``W_dec`` itself has unit rows when you look at it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _generator(seed: int | None) -> torch.Generator | None:
    return None if seed is None else torch.Generator().manual_seed(seed)


class SAE(nn.Module):
    """The part all families share: the unit-norm dictionary, the decoder, input checks, config."""

    family: ClassVar[str] = "base"

    def __init__(self, d_in: int, n_latents: int, *, seed: int | None = None):
        super().__init__()
        self.d_in = _positive_int("d_in", d_in)
        self.n_latents = _positive_int("n_latents", n_latents)
        init = torch.randn(n_latents, d_in, generator=_generator(seed))
        self.W_dec = nn.Parameter(F.normalize(init, dim=1))
        # Pre-bias: subtracted before encoding and added back after decoding, so the codes
        # describe deviations from a learned centre of the data.
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        # Set by a subclass from its own arguments; save_sae() stores them to rebuild the model.
        self._config_extras: dict = {}

    # ---------------------------------------------------------------- the shared decoder
    def atoms(self) -> Tensor:
        """The dictionary actually used: rows of ``W_dec`` scaled to unit length."""
        return F.normalize(self.W_dec, dim=1)

    def decode(self, z: Tensor) -> Tensor:
        if z.shape[-1] != self.n_latents:
            raise ValueError(
                f"{type(self).__name__}.decode expects codes with last dimension "
                f"n_latents={self.n_latents}; got shape {tuple(z.shape)}"
            )
        return z @ self.atoms() + self.b_dec

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Reconstruct ``x``; returns ``(x_hat, z)``."""
        z = self.encode(x)
        return self.decode(z), z

    def encode(self, x: Tensor) -> Tensor:  # pragma: no cover - every family overrides it
        raise NotImplementedError

    @torch.no_grad()
    def renormalize_(self) -> None:
        """Put the ``W_dec`` parameter back on the unit sphere (the trainer calls this every step)."""
        self.W_dec.copy_(F.normalize(self.W_dec, dim=1))

    # ---------------------------------------------------------------- training hooks
    def extra_losses(self, x: Tensor, x_hat: Tensor, z: Tensor, dead_mask: Tensor | None) -> dict[str, Tensor]:
        """Family-specific terms added to any training objective (sparsity penalty, AuxK, ...)."""
        return {}

    # ---------------------------------------------------------------- checks and config
    def check_input(self, x: Tensor) -> Tensor:
        """Fail loudly on input this SAE cannot meaningfully encode; return it in the SAE's dtype."""
        name = type(self).__name__
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} expects a torch.Tensor, got {type(x).__name__}")
        if x.ndim == 0 or x.shape[-1] != self.d_in:
            raise ValueError(
                f"{name} expects activations whose last dimension is d_in={self.d_in}; "
                f"got shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"{name} expects floating-point activations, got dtype {x.dtype}")
        if not torch.isfinite(x).all():
            bad = (~torch.isfinite(x)).sum().item()
            raise ValueError(f"{name} got activations with {bad} NaN or infinite values; clean them first")
        return x.to(self.W_dec.dtype)

    def check_k(self, k: int | None, default: int) -> int:
        """Resolve an inference-time ``k`` (``None`` means the training value) and validate it."""
        k = default if k is None else k
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.n_latents:
            raise ValueError(f"k must be an integer in [1, n_latents={self.n_latents}], got {k!r}")
        return k

    def config(self) -> dict:
        """Everything needed to rebuild this SAE (weights aside): used by save_sae/load_sae."""
        return {"family": self.family, "d_in": self.d_in, "n_latents": self.n_latents, **self._config_extras}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "family")


class ReLUSAE(SAE):
    """The standard SAE: ``z = ReLU(W_enc (x - b_dec) + b_enc)``, trained with MSE + ``l1_coeff``·L1.

    The L1 term is decoder-norm aware by construction: decoding uses unit-norm atoms, so ``z_i`` is the
    norm of latent ``i``'s contribution and the penalty cannot be dodged by shrinking ``z`` while growing
    the decoder (the reason other libraries weight L1 by ``||W_dec,i||``; here that weight is always 1).
    """

    family = "relu"

    def __init__(self, d_in: int, n_latents: int, *, l1_coeff: float = 1e-3, seed: int | None = None):
        super().__init__(d_in, n_latents, seed=seed)
        if not (isinstance(l1_coeff, (int, float)) and l1_coeff >= 0):
            raise ValueError(f"l1_coeff must be a non-negative number, got {l1_coeff!r}")
        self.l1_coeff = float(l1_coeff)
        self._config_extras = {"l1_coeff": self.l1_coeff}
        # Encoder starts as the decoder's transpose: each latent first listens to its own atom.
        self.W_enc = nn.Parameter(self.W_dec.detach().T.clone())
        self.b_enc = nn.Parameter(torch.zeros(n_latents))

    def pre_activations(self, x: Tensor) -> Tensor:
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: Tensor) -> Tensor:
        return F.relu(self.pre_activations(self.check_input(x)))

    def extra_losses(self, x, x_hat, z, dead_mask):
        if self.l1_coeff == 0:
            return {}
        return {"l1": self.l1_coeff * z.abs().sum(-1).mean()}


class TopKSAE(SAE):
    """TopK SAE: keep the ``k`` largest pre-activations of each input, zero the rest.

    Codes are non-negative (ReLU after the selection), so a row has exactly ``k`` non-zeros whenever at
    least ``k`` pre-activations are positive, which is the normal case, and never more than ``k``.
    AuxK (Gao et al. 2024): latents that have not fired for a while ("dead") are asked to reconstruct
    the main reconstruction's error with their own top ``k_aux`` pre-activations, which gives them a
    gradient and brings many back to life.
    """

    family = "topk"

    def __init__(
        self,
        d_in: int,
        n_latents: int,
        k: int,
        *,
        auxk_coeff: float = 1 / 32,
        k_aux: int | None = None,
        seed: int | None = None,
    ):
        super().__init__(d_in, n_latents, seed=seed)
        self.k = self.check_k(k, k)
        if not (isinstance(auxk_coeff, (int, float)) and auxk_coeff >= 0):
            raise ValueError(f"auxk_coeff must be a non-negative number, got {auxk_coeff!r}")
        self.auxk_coeff = float(auxk_coeff)
        self.k_aux = _positive_int("k_aux", k_aux) if k_aux is not None else max(1, d_in // 2)
        self._config_extras = {"k": self.k, "auxk_coeff": self.auxk_coeff, "k_aux": self.k_aux}
        self.W_enc = nn.Parameter(self.W_dec.detach().T.clone())
        self.b_enc = nn.Parameter(torch.zeros(n_latents))

    def pre_activations(self, x: Tensor) -> Tensor:
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: Tensor, k: int | None = None) -> Tensor:
        k = self.check_k(k, self.k)
        pre = self.pre_activations(self.check_input(x))
        values, indices = pre.topk(k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, indices, F.relu(values))

    def forward(self, x: Tensor, k: int | None = None) -> tuple[Tensor, Tensor]:
        z = self.encode(x, k)
        return self.decode(z), z

    def extra_losses(self, x, x_hat, z, dead_mask):
        if dead_mask is None or self.auxk_coeff == 0 or not bool(dead_mask.any()):
            return {}
        dead = dead_mask.nonzero().squeeze(1)
        residual = (x - x_hat).detach().reshape(-1, self.d_in)
        pre = (x.reshape(-1, self.d_in) - self.b_dec) @ self.W_enc[:, dead] + self.b_enc[dead]
        values, indices = pre.topk(min(self.k_aux, dead.numel()), dim=-1)
        z_aux = torch.zeros_like(pre).scatter(-1, indices, F.relu(values))
        residual_hat = z_aux @ self.atoms()[dead]
        # Normalised so the term means "fraction of the error the dead latents leave unexplained".
        aux = (residual_hat - residual).pow(2).sum(-1).mean() / residual.pow(2).sum(-1).mean().clamp_min(1e-12)
        return {"auxk": self.auxk_coeff * aux}


@dataclass
class PursuitTrace:
    """Every step of one matching-pursuit run (see :meth:`MPSAE.trace`)."""

    indices: Tensor  # (batch, k): atom chosen at each step
    coefficients: Tensor  # (batch, k): amount added to that atom's code (0 once pursuit has stopped)
    residuals: Tensor  # (k + 1, batch, d_in): residual before the first step and after each step


class MPSAE(SAE):
    """Matching-pursuit SAE (Costa et al. 2025): the encoder is ``k`` unrolled greedy steps.

    Starting from ``r = x - b_dec``, each step correlates the residual with every atom, ``c = r @ atomsᵀ``,
    picks ``j = argmax ReLU(c)``, adds ``c_j`` to ``z_j`` (codes accumulate if an atom is picked twice)
    and removes it from the residual, ``r -= c_j · atom_j``. Then ``x_hat = x - r``. Steps stop adding
    anything once no atom correlates positively. The dictionary is tied (no separate encoder), the loss
    is MSE alone, and sparsity comes from ``k``.

    Training memory stays O(k·batch·d_in): the indices are chosen without a graph, then the coefficients
    are recomputed differentiably on the gathered chosen atoms only. Gradients flow through all unrolled
    steps, with the chosen indices treated as constants, exactly as in the plain loop of :meth:`trace`.
    """

    family = "mp"

    def __init__(self, d_in: int, n_latents: int, k: int, *, seed: int | None = None):
        super().__init__(d_in, n_latents, seed=seed)
        self.k = self.check_k(k, k)
        self._config_extras = {"k": self.k}

    @torch.no_grad()
    def _select(self, residual: Tensor, atoms: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Run the greedy choice without autograd: which atom each step picks, and whether it is active."""
        r = residual.clone()
        indices = torch.empty(r.shape[0], k, dtype=torch.long, device=r.device)
        active = torch.empty(r.shape[0], k, dtype=torch.bool, device=r.device)
        for t in range(k):
            best, j = (r @ atoms.T).max(dim=-1)
            on = best > 0
            r -= torch.where(on, best, 0.0).unsqueeze(-1) * atoms[j]
            indices[:, t], active[:, t] = j, on
        return indices, active

    def _pursue(self, x: Tensor, k: int) -> tuple[Tensor, Tensor]:
        x = self.check_input(x)
        lead, flat = x.shape[:-1], x.reshape(-1, self.d_in)
        atoms = self.atoms()
        residual = flat - self.b_dec
        indices, active = self._select(residual.detach(), atoms.detach(), k)
        chosen = atoms[indices]  # (batch, k, d_in): only the atoms the pursuit used
        coefficients = []
        for t in range(k):
            coef = (residual * chosen[:, t]).sum(-1) * active[:, t]
            residual = residual - coef.unsqueeze(-1) * chosen[:, t]
            coefficients.append(coef)
        coefficients = torch.stack(coefficients, dim=1)
        z = flat.new_zeros(flat.shape[0], self.n_latents).scatter_add(1, indices, coefficients)
        x_hat = flat - residual
        return x_hat.reshape(*lead, self.d_in), z.reshape(*lead, self.n_latents)

    def encode(self, x: Tensor, k: int | None = None) -> Tensor:
        return self._pursue(x, self.check_k(k, self.k))[1]

    def forward(self, x: Tensor, k: int | None = None) -> tuple[Tensor, Tensor]:
        return self._pursue(x, self.check_k(k, self.k))

    @torch.no_grad()
    def trace(self, x: Tensor, k: int | None = None) -> PursuitTrace:
        """The plain pursuit loop, keeping every residual: for teaching, and to check the fast path."""
        k = self.check_k(k, self.k)
        atoms = self.atoms()
        r = self.check_input(x).reshape(-1, self.d_in) - self.b_dec
        residuals, indices, coefficients = [r], [], []
        for _ in range(k):
            c = F.relu(r @ atoms.T)
            coef, j = c.max(dim=-1)
            r = r - coef.unsqueeze(-1) * atoms[j]
            residuals.append(r)
            indices.append(j)
            coefficients.append(coef)
        return PursuitTrace(torch.stack(indices, 1), torch.stack(coefficients, 1), torch.stack(residuals))


FAMILIES: dict[str, type[SAE]] = {cls.family: cls for cls in (ReLUSAE, TopKSAE, MPSAE)}
