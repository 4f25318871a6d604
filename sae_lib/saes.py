"""Sparse autoencoder families that share one shape.

Every SAE maps activations ``x`` of shape ``(..., d_in)`` to codes ``z`` of shape ``(..., n_latents)``
and back with the same linear decoder::

    x_hat = z @ atoms + b_dec        atoms = rows of W_dec, each of unit length

The families differ only in how they choose ``z``:

* :class:`ReLUSAE`: ``z = ReLU(W_enc (x - b_dec) + b_enc)``, made sparse by an L1 penalty.
* :class:`TopKSAE`: keep the ``k`` largest pre-activations (Gao et al. 2024), plus the AuxK loss.
* :class:`MPSAE`: up to ``k`` greedy matching-pursuit steps over the tied dictionary (Costa et al. 2025).
* :class:`BatchTopKSAE`: TopK over the whole batch in training, a learned threshold at inference (Bussmann et al. 2024).
* :class:`MatryoshkaSAE`: BatchTopK whose nested prefixes of latents must each reconstruct (Bussmann et al. 2025).

Decoding always goes through :meth:`SAE.atoms`, the row-normalised ``W_dec``. So ``|z_i|`` is exactly
the size of latent ``i``'s contribution, whatever the raw parameter's scale; the trainer also renormalises
the parameter after each step so ``W_dec`` itself has unit rows when you look at it.

Fast paths that compute the same function. A few shortcuts make a training step cheap; each gives the
same codes, reconstructions and gradients as the plain formulas above up to float rounding, and
``tests/test_saes.py`` checks that against plain reference implementations:

* large ReLU and TopK encoders get the pre-bias gradient from one vector-matrix product (:class:`CentredLinear`);
* MP, and TopK with a large dictionary, decode only the ``k`` atoms each input chose (:func:`decode_chosen`);
* MP picks its atoms with one Gram matrix instead of ``k`` dense correlation products
  (:func:`greedy_pursuit`, refreshed every few steps so its rounding cannot decide a choice), and backpropagates
  through its steps without storing them (:class:`UnrolledPursuit`).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .util import is_integer, positive_int, real_number, seeded_generator


def _generator(seed: int | None) -> torch.Generator | None:
    return None if seed is None else seeded_generator(seed)


class CentredLinear(torch.autograd.Function):
    """``(x - b_dec) @ W + b`` for a (batch, d_in) ``x``, with a cheaper gradient for ``b_dec``.

    Autograd would find ``b_dec``'s gradient by forming the gradient of every centred row,
    ``g @ Wᵀ`` (a full batch × n_latents × d_in product, as costly as the forward pass), and then summing
    it over the batch. ``b_dec`` is shared by all rows, so the same number is ``-(g summed over rows) @ Wᵀ``:
    one vector-matrix product. Everything else is the ordinary linear-layer gradient.
    """

    @staticmethod
    def forward(ctx, x: Tensor, b_dec: Tensor, W: Tensor, b: Tensor) -> Tensor:
        centred = x - b_dec
        ctx.save_for_backward(centred, W)
        return (centred @ W).add_(b)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        centred, W = ctx.saved_tensors
        need_x, need_b_dec, need_W, need_b = ctx.needs_input_grad
        g_x = g @ W.T if need_x else None
        g_summed = g.sum(0) if need_b_dec or need_b else None
        g_b_dec = None
        if need_b_dec:
            g_b_dec = -g_x.sum(0) if g_x is not None else -(g_summed @ W.T)
        g_W = centred.T @ g if need_W else None
        return g_x, g_b_dec, g_W, g_summed if need_b else None


class CentredSelect(torch.autograd.Function):
    """Some entries of ``(x - b_dec) @ W + b`` for a (batch, d_in) ``x``, ``(values, indices)``, with a
    gradient that touches only the chosen entries. The ``rule`` chooses them:

    * ``"row_topk"``: the ``k`` largest of each row (TopK); indices of shape (batch, k);
    * ``"batch_topk"``: the ``k`` largest of the whole batch (BatchTopK);
    * ``"positive"``: every positive one (ReLU; ``k`` unused). When more than one entry in
      :data:`SPARSE_ENCODE_RATIO` is positive (a young ReLU SAE), a sparse product would cost more than the
      dense one: then ``values`` is the whole ``ReLU`` of the matrix, flat, ``indices`` is empty, and the
      gradient is the dense one.

    The last two return flat indices ``row · n_latents + column`` in increasing order, so their rows
    come sorted, as :func:`decode_rows` wants.

    Autograd would scatter the values' gradient into a dense (batch, n_latents) matrix, mostly zeros, and
    multiply the centred inputs by it: a product as costly as the forward pass. Only the chosen entries
    are not zero, so ``W``'s gradient is a sparse-dense product (``torch.sparse.mm``: one multiply-add per
    chosen entry and input dimension), ``b``'s a sum per latent, and ``x``'s (when asked for) a weighted
    sum of the chosen columns of ``W`` per row (``embedding_bag``, as in :func:`decode_chosen`).
    """

    @staticmethod
    def forward(ctx, x: Tensor, b_dec: Tensor, W: Tensor, b: Tensor, rule: str, k: int = 0) -> tuple[Tensor, Tensor]:
        centred = x - b_dec
        pre = torch.addmm(b, centred, W)
        n_latents = W.shape[1]
        if rule == "row_topk":
            values, indices = pre.topk(k, dim=-1)
            rows = torch.arange(x.shape[0], device=x.device).repeat_interleave(k)
            columns = indices.reshape(-1)
        else:
            if rule == "batch_topk":
                values, indices = pre.reshape(-1).topk(k)
                indices, order = indices.sort()
                values = values[order]
            elif rule == "positive":
                positive = pre > 0
                if SPARSE_ENCODE_RATIO * int(positive.sum()) > pre.numel():  # too many: stay dense
                    ctx.save_for_backward(centred, W, positive)
                    indices = pre.new_empty(0, dtype=torch.long)
                    ctx.mark_non_differentiable(indices)
                    return pre.clamp_min_(0).reshape(-1), indices
                indices = positive.reshape(-1).nonzero().squeeze(1)
                values = pre.reshape(-1)[indices]
            else:
                raise ValueError(f"rule must be 'row_topk', 'batch_topk' or 'positive', got {rule!r}")
            rows, columns = indices.div(n_latents, rounding_mode="floor"), indices.remainder(n_latents)
        ctx.save_for_backward(centred, W, rows, columns)
        ctx.mark_non_differentiable(indices)
        return values, indices

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor, _unused: Tensor):
        need_x, need_b_dec, need_W, need_b = ctx.needs_input_grad[:4]
        settings = [None] * (len(ctx.needs_input_grad) - 4)  # rule, k
        if len(ctx.saved_tensors) == 3:  # "positive", kept dense: CentredLinear's gradient, masked
            centred, W, positive = ctx.saved_tensors
            g = g.reshape(positive.shape) * positive
            g_x = g @ W.T if need_x else None
            g_b = g.sum(0)
            return (g_x, -(W @ g_b) if need_b_dec else None, centred.T @ g if need_W else None,
                    g_b if need_b else None, *settings)
        centred, W, rows, columns = ctx.saved_tensors
        weights, n_latents = g.reshape(-1), W.shape[1]
        g_x = decode_rows(weights, rows, columns, W.T.contiguous(), len(centred)) if need_x else None
        g_b = g.new_zeros(n_latents).index_add_(0, columns, weights) if need_b or need_b_dec else None
        g_W = None
        if need_W:
            sparse = torch.sparse_coo_tensor(torch.stack([columns, rows]), weights, (n_latents, len(centred)),
                                             check_invariants=False)  # valid by construction
            g_W = torch.sparse.mm(sparse, centred).T.contiguous()
        return g_x, -(W @ g_b) if need_b_dec else None, g_W, g_b if need_b else None, *settings


def decode_rows(values: Tensor, rows: Tensor, columns: Tensor, atoms: Tensor, n_rows: int) -> Tensor:
    """``(n_rows, d)``: row ``r`` is ``Σ values[i] · atoms[columns[i]]`` over the entries ``i`` with
    ``rows[i] = r``, for ``rows`` in increasing order (a sparse code times the dictionary; a row with no
    entries decodes to zero). ``embedding_bag`` with one bag per row, as :func:`decode_chosen` but with
    any number of entries per row."""
    counts = torch.bincount(rows, minlength=n_rows)
    return F.embedding_bag(columns, atoms, counts.cumsum(0) - counts, per_sample_weights=values, mode="sum")


def dense_codes(values: Tensor, indices: Tensor, n_latents: int) -> Tensor:
    """The ``(..., n_latents)`` code that holds ``values[..., t]`` at column ``indices[..., t]`` (summed where an
    index repeats, as when matching pursuit picks an atom twice) and zero elsewhere."""
    return values.new_zeros(*values.shape[:-1], n_latents).scatter_add_(-1, indices, values)


def decode_chosen(values: Tensor, indices: Tensor, atoms: Tensor) -> Tensor:
    """``Σ_t values[:, t] · atoms[indices[:, t]]``: what ``z @ atoms`` gives when row ``b`` of ``z`` is
    ``values[b]`` at columns ``indices[b]`` (summed where an index repeats) and zero elsewhere.

    It touches ``k`` atoms per row instead of all ``n_latents``; ``embedding_bag`` does the gather and
    the weighted sum in one pass, and its backward scatters the gradient into the chosen rows only.
    """
    return F.embedding_bag(indices, atoms, per_sample_weights=values, mode="sum")


SPARSE_DECODE_RATIO = 64
"""Decode through :func:`decode_chosen` once ``n_latents ≥ SPARSE_DECODE_RATIO · k``. A gathered atom costs far
more per number than a dense matrix product does, so skipping atoms only pays when most are skipped:
on the book's 2-core CPU the two break even between ``n_latents = 32·k`` and ``64·k``."""


SPARSE_ENCODE_RATIO = 8
""":class:`CentredSelect` keeps ReLU codes sparse while at most one entry in this many is positive. A sparse
product costs several times a dense one per entry (measured about 7x on the book's 2-core CPU), so a denser
code is cheaper multiplied densely."""


CENTRED_LINEAR_MIN_WORK = 2**22
"""Use :class:`CentredLinear` once ``batch · n_latents · d_in`` (the multiply-adds it saves) reaches this; below
it, a custom autograd function costs more time in Python than the product it saves."""


def _linear_pre_activations(sae: ReLUSAE | TopKSAE, x: Tensor) -> Tensor:
    """``(x - b_dec) @ W_enc + b_enc`` over any leading dimensions: the encoder ReLU and TopK share."""
    flat = x.reshape(-1, sae.d_in)
    if flat.shape[0] * sae.n_latents * sae.d_in < CENTRED_LINEAR_MIN_WORK:
        pre = (flat - sae.b_dec) @ sae.W_enc + sae.b_enc
    else:
        pre = CentredLinear.apply(flat, sae.b_dec, sae.W_enc, sae.b_enc)
    return pre.reshape(*x.shape[:-1], sae.n_latents)


class SAE(nn.Module):
    """The part all families share: the unit-norm dictionary, the decoder, input checks, config."""

    family: ClassVar[str] = "base"

    def __init__(self, d_in: int, n_latents: int, *, seed: int | None = None):
        super().__init__()
        self.d_in = positive_int("d_in", d_in)
        self.n_latents = positive_int("n_latents", n_latents)
        init = torch.randn(self.n_latents, self.d_in, generator=_generator(seed))
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
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))  # what F.normalize computes, in place

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
        given, x = x.dtype, x.to(self.W_dec.dtype)  # checked after the cast: 1e300 is finite in float64 only
        # A NaN or inf anywhere makes the sum non-finite, and one reduction is cheaper than a mask; count the
        # culprits only then (the sum alone can also overflow on huge but finite values).
        if not math.isfinite(x.sum().item()) and (bad := (~torch.isfinite(x)).sum().item()):
            cast = f" once cast from {given} to the SAE's {x.dtype}" if given != x.dtype else ""
            raise ValueError(f"{name} got activations with {bad} NaN or infinite values{cast}; clean them first")
        return x

    def check_k(self, k: int | None, default: int) -> int:
        """Resolve an inference-time ``k`` (``None`` means the training value) and validate it."""
        k = default if k is None else k
        if not is_integer(k) or not 1 <= k <= self.n_latents:
            raise ValueError(f"k must be an integer in [1, n_latents={self.n_latents}], got {k!r}")
        return int(k)

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
        self.l1_coeff = real_number("l1_coeff", l1_coeff, low=0)
        self._config_extras = {"l1_coeff": self.l1_coeff}
        # Encoder starts as the decoder's transpose: each latent first listens to its own atom.
        self.W_enc = nn.Parameter(self.W_dec.detach().T.clone())
        self.b_enc = nn.Parameter(torch.zeros(n_latents))

    def pre_activations(self, x: Tensor) -> Tensor:
        return _linear_pre_activations(self, x)

    def encode(self, x: Tensor) -> Tensor:
        return F.relu(self.pre_activations(self.check_input(x)))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(x_hat, z)`` as ``decode(encode(x))`` would give. A large SAE keeps its positive codes sparse
        (:class:`CentredSelect`), and decodes them sparsely too once few enough latents fire."""
        x = self.check_input(x)
        flat = x.reshape(-1, self.d_in)
        if len(flat) * self.n_latents * self.d_in < CENTRED_LINEAR_MIN_WORK:
            return super().forward(x)
        values, indices = CentredSelect.apply(flat, self.b_dec, self.W_enc, self.b_enc, "positive")
        codes = (*x.shape[:-1], self.n_latents)
        # x_hat is computed from the z returned, as decode(z) would, so an objective can ask for its
        # gradient with respect to the active codes (TargetL0 does; a sparse decode skips the zeros)
        if not len(indices) and len(values) == len(flat) * self.n_latents:  # many fire: kept dense
            z = values.reshape(codes)
            return self.decode(z), z
        z = values.new_zeros(len(flat) * self.n_latents).scatter(0, indices, values).reshape(codes)
        if SPARSE_DECODE_RATIO * len(values) > z.numel():  # more than one latent in SPARSE_DECODE_RATIO fires
            return self.decode(z), z
        rows, columns = indices.div(self.n_latents, rounding_mode="floor"), indices.remainder(self.n_latents)
        x_hat = decode_rows(z.reshape(-1)[indices], rows, columns, self.atoms(), len(flat)) + self.b_dec
        return x_hat.reshape(x.shape), z

    def extra_losses(self, x, x_hat, z, dead_mask):
        if self.l1_coeff == 0:
            return {}
        # ReLU codes are never negative, so |z| = z: summing z directly gives the same value and gradient
        # (where z = 0 the ReLU passes no gradient back either way) and skips two passes over the codes.
        rows = z.numel() // self.n_latents
        return {"l1": self.l1_coeff / rows * z.sum()}


class TopKSAE(SAE):
    """TopK SAE: keep the ``k`` largest pre-activations of each input, zero the rest.

    Codes are non-negative (ReLU after the selection), so a row has exactly ``k`` non-zeros whenever at
    least ``k`` pre-activations are positive, which is the normal case, and never more than ``k``.
    AuxK (Gao et al. 2024): latents that have not fired for a while ("dead") are asked to reconstruct
    the main reconstruction's error with their own top ``k_aux`` pre-activations, which gives them a
    gradient and brings many back to life. Both terms are normalised as in the paper: AuxK is the fraction
    of the error the dead latents leave unexplained, the MSE is read as the batch's FVU, and both are
    then multiplied by the batch's variance, so the main term stays the plain MSE and the ratio of the
    two does not depend on the data's scale.
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
        self.auxk_coeff = real_number("auxk_coeff", auxk_coeff, low=0)
        self.k_aux = positive_int("k_aux", k_aux) if k_aux is not None else max(1, self.d_in // 2)
        self._config_extras = {"k": self.k, "auxk_coeff": self.auxk_coeff, "k_aux": self.k_aux}
        self.W_enc = nn.Parameter(self.W_dec.detach().T.clone())
        self.b_enc = nn.Parameter(torch.zeros(n_latents))

    def pre_activations(self, x: Tensor) -> Tensor:
        return _linear_pre_activations(self, x)

    def _select(self, x: Tensor, k: int | None) -> tuple[Tensor, Tensor]:
        """The kept codes and their latents, ``(values, indices)``, each of shape ``(..., k)``."""
        x, k = self.check_input(x), self.check_k(k, self.k)
        flat = x.reshape(-1, self.d_in)
        if flat.shape[0] * self.n_latents * self.d_in < CENTRED_LINEAR_MIN_WORK:
            values, indices = self.pre_activations(x).topk(k, dim=-1)
        else:  # the same numbers, with a backward pass that skips the unchosen latents
            values, indices = CentredSelect.apply(flat, self.b_dec, self.W_enc, self.b_enc, "row_topk", k)
            values, indices = values.reshape(*x.shape[:-1], k), indices.reshape(*x.shape[:-1], k)
        return F.relu(values), indices

    def encode(self, x: Tensor, k: int | None = None) -> Tensor:
        return dense_codes(*self._select(x, k), self.n_latents)

    def forward(self, x: Tensor, k: int | None = None) -> tuple[Tensor, Tensor]:
        """``(x_hat, z)`` as ``decode(encode(x))`` would give, decoding only the ``k`` kept atoms per row."""
        values, indices = self._select(x, k)
        z = dense_codes(values, indices, self.n_latents)
        k = values.shape[-1]
        if self.n_latents < SPARSE_DECODE_RATIO * k:
            return self.decode(z), z
        x_hat = decode_chosen(values.reshape(-1, k), indices.reshape(-1, k), self.atoms()) + self.b_dec
        return x_hat.reshape(*values.shape[:-1], self.d_in), z

    def extra_losses(self, x, x_hat, z, dead_mask):
        if dead_mask is None or self.auxk_coeff == 0 or not bool(dead_mask.any()):
            return {}
        dead = dead_mask.nonzero().squeeze(1)
        x = x.reshape(-1, self.d_in)
        residual = (x - x_hat.reshape(-1, self.d_in)).detach()
        pre = (x - self.b_dec) @ self.W_enc[:, dead] + self.b_enc[dead]
        values, indices = pre.topk(min(self.k_aux, dead.numel()), dim=-1)
        z_aux = dense_codes(F.relu(values), indices, dead.numel())
        residual_hat = z_aux @ self.atoms()[dead]
        # Both terms normalised, as Gao et al. do: AuxK by the error's energy, the MSE by the batch's
        # variance (MSE / variance is the batch's FVU). Multiplying both by that variance (no gradient)
        # keeps the main term the plain MSE, and auxk / mse = α·unexplained / FVU at any data scale.
        unexplained = (residual_hat - residual).pow(2).mean() / residual.pow(2).mean().clamp_min(1e-12)
        variance = (x - x.mean(0)).pow(2).mean().detach()
        return {"auxk": self.auxk_coeff * unexplained * variance}


PURSUIT_REFRESH_EVERY = 16
"""The Gram route recomputes the residual and its correlations from scratch every this many steps. Its
cheap row updates add a rounding error at every step; left alone, that error grows with the number of
steps until, once the residual is about 1e-4 of the input (float32, ~100 steps at d_in = 32), it decides
which atom wins. Refreshing keeps the error at the size of a few steps' rounding, so the Gram and
step-by-step routes, and hence different batch sizes, pick the same atoms."""


def pursuit_noise_floor(dtype: torch.dtype) -> float:
    """The smallest coefficient, relative to the input's norm, that pursuit still treats as signal:
    ``sqrt(eps)`` of the dtype (3.5e-4 in float32, 1.5e-8 in float64). Once the residual is down to
    rounding noise, every further step would otherwise pick some atom that correlates with that noise
    and fill the code with noise-level entries (at k much larger than d_in, most of the code)."""
    return torch.finfo(dtype).eps ** 0.5


@torch.no_grad()
def greedy_pursuit(
    residual: Tensor, atoms: Tensor, k: int, use_gram: bool, *, threshold: float | None = None,
    stop_on_repeat: bool = False, keep_residuals: bool = False,
) -> tuple[Tensor, Tensor, Tensor, list[Tensor] | None]:
    """At most ``k`` matching-pursuit steps on (batch, d_in) residuals:
    ``(final residual, coefficients, indices, residuals after each step or None)``.

    A row stops (adds nothing more) at the first step where its best correlation is at most the noise
    floor (:func:`pursuit_noise_floor` × its starting norm; this includes "no atom correlates positively"),
    where ``threshold`` is set and its residual norm has fallen below ``threshold`` × its starting norm,
    or, with ``stop_on_repeat``, where the best atom is one it already used (the support stops changing).
    The loop ends early once every row has stopped, so the outputs may have fewer than ``k`` columns.

    Only the correlations ``c = r @ atomsᵀ`` decide each step. Removing ``v·atom_j`` from ``r`` changes
    them by ``-v·(atom_j @ atomsᵀ)``, which is row ``j`` of the Gram matrix ``atoms @ atomsᵀ``. So with
    ``use_gram``, one Gram product plus cheap row updates replace a dense product per step (refreshed
    from scratch every :data:`PURSUIT_REFRESH_EVERY` steps); without it, ``r`` is updated and correlated
    again at every step. ``keep_residuals`` (step by step only) also returns every intermediate residual.
    """
    use_gram = use_gram and not keep_residuals
    gram = atoms @ atoms.T if use_gram else None
    start = residual
    r = residual.clone()
    start_norm = start.norm(dim=-1, keepdim=True)
    floor = pursuit_noise_floor(r.dtype) * start_norm
    limit = None if threshold is None else (threshold * start_norm).square()
    energy = start_norm.square() if limit is not None else None
    support = torch.zeros(r.shape[0], atoms.shape[0], dtype=torch.bool, device=r.device) if stop_on_repeat else None
    running = torch.ones(r.shape[0], 1, dtype=torch.bool, device=r.device)
    c = r @ atoms.T
    rows = torch.empty_like(c) if use_gram else None
    indices, coefficients, residuals = [], [], [r.clone()] if keep_residuals else None
    for t in range(k):
        if gram is not None and t > 0 and t % PURSUIT_REFRESH_EVERY == 0:
            r = start - decode_chosen(torch.cat(coefficients, 1), torch.cat(indices, 1), atoms)
            c = r @ atoms.T
            if energy is not None:
                energy = r.pow(2).sum(-1, keepdim=True)
        best, j = c.max(dim=-1, keepdim=True)
        running &= best > floor
        if limit is not None:
            running &= energy >= limit
        if support is not None:
            running &= ~support.gather(1, j)
            support.scatter_(1, j, running)
        best = best * running  # a stopped row adds nothing
        indices.append(j)
        coefficients.append(best)
        if not bool(running.any()):
            if residuals is not None:
                residuals.append(r.clone())
            break
        if energy is not None and gram is not None:
            energy = energy - best.square()  # Pythagoras: the residual loses exactly c_j² of energy
        if gram is not None:
            c.addcmul_(torch.index_select(gram, 0, j.squeeze(1), out=rows), best, value=-1)
        else:
            r.addcmul_(atoms.index_select(0, j.squeeze(1)), best, value=-1)
            if residuals is not None:
                residuals.append(r.clone())
            if t < k - 1:
                c = r @ atoms.T
                if energy is not None:
                    energy = r.pow(2).sum(-1, keepdim=True)
    indices, coefficients = torch.cat(indices, dim=1), torch.cat(coefficients, dim=1)
    if gram is not None:
        r = start - decode_chosen(coefficients, indices, atoms)
    return r, coefficients, indices, residuals


class UnrolledPursuit(torch.autograd.Function):
    """:func:`greedy_pursuit`, differentiable in the residual and the atoms, with the chosen indices held
    constant: the gradient autograd would give through the plain loop of :meth:`MPSAE.trace`.

    The plain loop is ``v_t = ReLU(<r_{t-1}, D_t>)``, ``r_t = r_{t-1} - v_t·D_t`` with ``D_t`` the atom
    chosen at step ``t``. Backward runs it in reverse, with ``e_t`` the gradient reaching ``r_t``::

        w_t = [v_t > 0]·(dL/dv_t - <e_t, D_t>)        the whole gradient reaching step t's coefficient
        dL/dD_t = w_t·r_{t-1} - v_t·e_t                 e_{t-1} = e_t + w_t·D_t

    Autograd would store every step's residual; this keeps only the last one and rebuilds
    ``r_{t-1} = r_t + v_t·D_t`` on the way back, so memory stays O(batch·(k + d_in)) beyond the inputs.
    """

    @staticmethod
    def forward(ctx, residual: Tensor, atoms: Tensor, k: int, use_gram: bool, threshold: float | None,
                stop_on_repeat: bool):
        final, coefficients, indices, _ = greedy_pursuit(residual, atoms, k, use_gram, threshold=threshold,
                                                         stop_on_repeat=stop_on_repeat)
        ctx.save_for_backward(atoms, final, coefficients, indices)
        ctx.mark_non_differentiable(indices)
        return final, coefficients, indices

    @staticmethod
    @once_differentiable
    def backward(ctx, g_final: Tensor | None, g_coefficients: Tensor | None, _):
        atoms, r, coefficients, indices = ctx.saved_tensors
        e = torch.zeros_like(r) if g_final is None else g_final.clone()
        r = r.clone()
        g_atoms = torch.zeros_like(atoms)
        steps = indices.T  # (k, batch): step t's atom for every row
        v_all = coefficients.T.unsqueeze(-1)  # (k, batch, 1)
        on_all = (v_all > 0).to(r.dtype)  # ReLU'(v_t)
        g_v_all = None if g_coefficients is None else g_coefficients.T.unsqueeze(-1)
        for t in reversed(range(steps.shape[0])):
            atom, v = atoms.index_select(0, steps[t]), v_all[t]
            r.addcmul_(atom, v)  # r_{t-1}
            w = torch.linalg.vecdot(e, atom).unsqueeze(-1).neg_()
            if g_v_all is not None:
                w += g_v_all[t]
            w *= on_all[t]
            g_atoms.index_add_(0, steps[t], (r * w).addcmul_(e, v, value=-1))  # dL/dD_t
            e.addcmul_(atom, w)
        return e, g_atoms, None, None, None, None


@dataclass
class PursuitTrace:
    """Every step of one matching-pursuit run (see :meth:`MPSAE.trace`)."""

    indices: Tensor  # (batch, steps): atom chosen at each step (steps ≤ k: the run ends once every row stopped)
    coefficients: Tensor  # (batch, steps): amount added to that atom's code (0 once a row has stopped)
    residuals: Tensor  # (steps + 1, batch, d_in): residual before the first step and after each step


class MPSAE(SAE):
    """Matching-pursuit SAE (Costa et al. 2025): the encoder is up to ``k`` unrolled greedy steps.

    Starting from ``r = x - b_dec``, each step correlates the residual with every atom, ``c = r @ atomsᵀ``,
    picks ``j = argmax ReLU(c)``, adds ``c_j`` to ``z_j`` (codes accumulate if an atom is picked twice)
    and removes it from the residual, ``r -= c_j · atom_j``. Then ``x_hat = x - r``. The dictionary is
    tied (no separate encoder), the loss is MSE alone, and sparsity comes from ``k``, the most steps
    a row may take (it may exceed ``d_in`` and even ``n_latents``: pursuit can pick an atom again).

    When a row stops. Always: once its best correlation is at or below the noise floor
    (:func:`pursuit_noise_floor`, about 3.5e-4 of the input's norm in float32), which includes "no atom
    correlates positively"; steps past that point would only encode rounding noise. Optionally, the
    authors' stopping rule: ``threshold`` stops a row once ``‖r‖ < threshold·‖x - b_dec‖`` (relative to
    the row's own norm, so it does not depend on the data's scale; the authors' notebook uses an
    absolute 0.05), and ``stop_on_repeat`` stops a row when its next atom is one it already used (the
    chosen support stops changing). With either rule, L0 comes out of the data, with ``k`` as a cap.

    Gradients flow through all unrolled steps, with the chosen indices treated as constants, exactly as
    in the plain loop of :meth:`trace`. The fast path (:class:`UnrolledPursuit`) gets there without
    ``k`` dense correlation products or a per-step graph, so training memory stays O(batch·(k + d_in)).
    """

    family = "mp"
    gram_limit_bytes: ClassVar[int] = 256 * 2**20
    """The pursuit uses the Gram matrix only while it takes at most this much memory (n_latents ≤ 8192 in float32)."""

    def __init__(self, d_in: int, n_latents: int, k: int, *, threshold: float | None = None,
                 stop_on_repeat: bool = False, seed: int | None = None):
        super().__init__(d_in, n_latents, seed=seed)
        self.k = self.check_k(k, k)
        if not isinstance(stop_on_repeat, bool):
            raise TypeError(f"stop_on_repeat must be True or False, got {stop_on_repeat!r}")
        # A fraction of the input's norm; None runs all k steps.
        self.threshold = None if threshold is None else real_number(
            "threshold", threshold, low=0, high=1, low_open=True, high_open=True)
        self.stop_on_repeat = stop_on_repeat
        self._config_extras = {"k": self.k, "threshold": self.threshold, "stop_on_repeat": self.stop_on_repeat}

    def check_k(self, k: int | None, default: int) -> int:
        """Like :meth:`SAE.check_k`, but without the ``n_latents`` cap: pursuit may take more steps than it
        has atoms, since it can pick an atom again to refine its coefficient."""
        k = default if k is None else k
        if not is_integer(k) or k < 1:
            raise ValueError(f"k must be a positive integer (the most pursuit steps per input), got {k!r}")
        return int(k)

    def _use_gram(self, batch: int, k: int, itemsize: int) -> bool:
        """The Gram route costs one n×n×d product instead of k-1 batch×n×d ones; take it when that is
        cheaper and the n×n matrix fits in :attr:`gram_limit_bytes` (it does not for, say, 46k latents).
        Both routes pick the same atoms (see :data:`PURSUIT_REFRESH_EVERY`), so this is a speed choice only."""
        n = self.n_latents
        return n < (k - 1) * batch and n * n * itemsize <= self.gram_limit_bytes

    def _pursue(self, x: Tensor, k: int) -> tuple[Tensor, Tensor]:
        x = self.check_input(x)
        lead, flat = x.shape[:-1], x.reshape(-1, self.d_in)
        use_gram = self._use_gram(flat.shape[0], k, flat.element_size())
        residual, coefficients, indices = UnrolledPursuit.apply(flat - self.b_dec, self.atoms(), k, use_gram,
                                                                self.threshold, self.stop_on_repeat)
        z = dense_codes(coefficients, indices, self.n_latents)
        x_hat = flat - residual
        return x_hat.reshape(*lead, self.d_in), z.reshape(*lead, self.n_latents)

    def encode(self, x: Tensor, k: int | None = None) -> Tensor:
        return self._pursue(x, self.check_k(k, self.k))[1]

    def forward(self, x: Tensor, k: int | None = None) -> tuple[Tensor, Tensor]:
        return self._pursue(x, self.check_k(k, self.k))

    @torch.no_grad()
    def trace(self, x: Tensor, k: int | None = None) -> PursuitTrace:
        """The plain pursuit loop, step by step, keeping every residual: for teaching, and to check the
        fast path. It stops where :meth:`encode` stops, so it may hold fewer than ``k`` steps."""
        k = self.check_k(k, self.k)
        r = self.check_input(x).reshape(-1, self.d_in) - self.b_dec
        _, coefficients, indices, residuals = greedy_pursuit(
            r, self.atoms(), k, use_gram=False, threshold=self.threshold, stop_on_repeat=self.stop_on_repeat,
            keep_residuals=True)
        return PursuitTrace(indices, coefficients, torch.stack(residuals))


class BatchTopKSAE(TopKSAE):
    """BatchTopK SAE (Bussmann, Leask & Nanda 2024): TopK over the whole batch instead of each row.

    In training, the batch's ``k·B`` largest pre-activations are kept (B rows), wherever they fall: a
    busy input may use many latents and a simple one few, while the batch averages ``k`` per row.
    At inference a batch should not change an input's code, so one threshold replaces the selection:
    ``z = pre·[pre > threshold]``. The threshold is a running estimate, updated at every training step
    from the smallest activation the batch kept (an exponential moving average with weight
    ``threshold_momentum`` on the old value), so L0 varies per input. Until the first training step it
    is unknown (stored as -1), and inference falls back to the batch selection. AuxK and the other
    settings are :class:`TopKSAE`'s.
    """

    family = "batchtopk"

    def __init__(self, d_in: int, n_latents: int, k: int | float, *, threshold_momentum: float = 0.99,
                 **topk_settings):
        super().__init__(d_in, n_latents, k, **topk_settings)
        self.threshold_momentum = real_number("threshold_momentum", threshold_momentum, low=0, high=1,
                                              high_open=True)
        self._config_extras["threshold_momentum"] = self.threshold_momentum
        self.register_buffer("threshold", torch.tensor(-1.0))

    def check_k(self, k: int | float | None, default: int | float) -> int | float:
        """``k`` is the *average* number of active latents per row, so it need not be an integer (the
        batch keeps ``round(k·B)``): any number in (0, n_latents]."""
        k = default if k is None else k
        if isinstance(k, bool) or not isinstance(k, numbers.Real) or not 0 < k <= self.n_latents:
            raise ValueError(f"k must be a number in (0, n_latents={self.n_latents}] (average active latents "
                             f"per row), got {k!r}")
        return int(k) if is_integer(k) else float(k)

    def _keep(self, n_rows: int, k: int | float) -> int:
        """How many entries a batch of ``n_rows`` keeps: ``round(k·rows)``, at least one."""
        return min(max(1, round(k * n_rows)), n_rows * self.n_latents)

    def _learn_threshold(self, values: Tensor) -> None:
        """In training, move the inference threshold towards the smallest positive value kept."""
        if self.training:
            kept = values.detach()[values.detach() > 0]
            if kept.numel():
                smallest = kept.min()
                if self.threshold < 0:
                    self.threshold.copy_(smallest)
                else:
                    self.threshold.lerp_(smallest, 1 - self.threshold_momentum)

    def _batch_select(self, pre: Tensor, k: int | float) -> Tensor:
        """Keep the ``round(k·rows)`` largest positive pre-activations of the whole batch; zero the rest."""
        flat = pre.reshape(-1)
        values, indices = flat.topk(self._keep(flat.numel() // self.n_latents, k))
        values = F.relu(values)
        self._learn_threshold(values)
        return torch.zeros_like(flat).scatter(0, indices, values).reshape(pre.shape)

    def _sparse_route(self, n_rows: int, k: float) -> bool:
        """Whether codes of ``k`` active latents per row are cheaper kept sparse (:class:`TopKSAE`'s two
        size rules)."""
        return n_rows * self.n_latents * self.d_in >= CENTRED_LINEAR_MIN_WORK \
            and self.n_latents >= SPARSE_DECODE_RATIO * k

    def _sparse_select(self, x: Tensor, k: int | float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The batch selection kept sparse: ``(values, rows, columns, z)``, rows in increasing order."""
        flat = x.reshape(-1, self.d_in)
        values, indices = CentredSelect.apply(flat, self.b_dec, self.W_enc, self.b_enc, "batch_topk",
                                              self._keep(len(flat), k))
        values = F.relu(values)
        self._learn_threshold(values)
        z = values.new_zeros(len(flat) * self.n_latents).scatter(0, indices, values)
        rows = indices.div(self.n_latents, rounding_mode="floor")
        return values, rows, indices.remainder(self.n_latents), z.reshape(*x.shape[:-1], self.n_latents)

    def encode(self, x: Tensor, k: int | float | None = None) -> Tensor:
        """Training mode, or no threshold yet, or an explicit ``k``: the batch's top ``k·B``. Otherwise
        (inference): every pre-activation above the learned threshold."""
        pre = self.pre_activations(self.check_input(x))
        if self.training or k is not None or self.threshold < 0:
            return self._batch_select(pre, self.check_k(k, self.k))
        return pre * (pre > self.threshold)

    def forward(self, x: Tensor, k: int | float | None = None) -> tuple[Tensor, Tensor]:
        x = self.check_input(x)
        if self.training or k is not None or self.threshold < 0:
            k = self.check_k(k, self.k)
            if self._sparse_route(x.numel() // self.d_in, k):  # same numbers, unchosen latents untouched
                values, rows, columns, z = self._sparse_select(x, k)
                x_hat = decode_rows(values, rows, columns, self.atoms(), x.numel() // self.d_in) + self.b_dec
                return x_hat.reshape(x.shape), z
        z = self.encode(x, k)
        return self.decode(z), z


class MatryoshkaSAE(BatchTopKSAE):
    """Matryoshka SAE (Bussmann, Nabeshima, Karvonen & Nanda 2025): nested dictionaries in one.

    ``prefixes`` are increasing latent counts ending at ``n_latents``, e.g. ``(4, 10, 20)``. The first
    ``m`` latents alone must reconstruct the input as well as they can, for every ``m`` in ``prefixes``:
    the loss adds, to the full reconstruction's MSE, the MSE of each shorter prefix's reconstruction
    (so the total is the sum of the prefix losses, with equal weights). The early latents then carry
    the general concepts (a parent) and later ones the specifics (its children), which is meant to keep
    a child's latent from absorbing its parent. The codes themselves are chosen as in
    :class:`BatchTopKSAE` (the paper's choice).
    """

    family = "matryoshka"

    def __init__(self, d_in: int, n_latents: int, k: int, *, prefixes: tuple[int, ...] | list[int] | None = None,
                 **batchtopk_settings):
        super().__init__(d_in, n_latents, k, **batchtopk_settings)
        prefixes = tuple(prefixes) if prefixes is not None else (max(1, n_latents // 4), max(1, n_latents // 2),
                                                                n_latents)
        if not prefixes or not all(is_integer(m) for m in prefixes) \
                or list(prefixes) != sorted(set(prefixes)) or prefixes[0] < 1 or prefixes[-1] != n_latents:
            raise ValueError(f"prefixes must be strictly increasing positive integers ending at "
                             f"n_latents={n_latents}, got {prefixes!r}")
        self.prefixes = tuple(int(m) for m in prefixes)
        self._config_extras["prefixes"] = list(prefixes)

    def prefix_reconstructions(self, z: Tensor) -> list[Tensor]:
        """The reconstruction from the first ``m`` latents alone, for each ``m`` in :attr:`prefixes`."""
        atoms, out, done = self.atoms(), [], 0
        partial = self.b_dec.expand(*z.shape[:-1], self.d_in)
        flat = z.reshape(-1, self.n_latents)
        if self._sparse_route(len(flat), flat.count_nonzero().item() / max(1, len(flat))):
            rows, columns = flat.nonzero(as_tuple=True)  # a sparse code: decode its entries only
            values = flat[rows, columns]
            for m in self.prefixes:
                inside = (columns >= done) & (columns < m)  # rows stay in increasing order
                step = decode_rows(values[inside], rows[inside], columns[inside], atoms, len(flat))
                partial = partial + step.reshape(partial.shape)
                out.append(partial)
                done = m
            return out
        for m in self.prefixes:
            partial = partial + z[..., done:m] @ atoms[done:m]
            out.append(partial)
            done = m
        return out

    def extra_losses(self, x, x_hat, z, dead_mask):
        terms = super().extra_losses(x, x_hat, z, dead_mask)
        shorter = self.prefix_reconstructions(z)[:-1]  # the full one is the main MSE already
        if shorter:
            terms["prefix_mse"] = sum((x - x_m).pow(2).mean() for x_m in shorter)
        return terms


FAMILIES: dict[str, type[SAE]] = {cls.family: cls for cls in (ReLUSAE, TopKSAE, MPSAE, BatchTopKSAE, MatryoshkaSAE)}
