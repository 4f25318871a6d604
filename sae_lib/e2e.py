"""End-to-end objectives (Braun et al. 2024): train an SAE for what the *model* does with its output.

A local SAE minimises ``‖a − â‖²``: every direction of the activation counts, whether or not the rest
of the network ever reads it. An end-to-end SAE is spliced into the model and trained so that the
model's output distribution stays what it was::

    e2e:     KL(p_original ‖ p_spliced)                     + sparsity
    e2e+ds:  ½·KL + (β/n)·Σ_{n later streams} MSE(original, spliced residual stream) + sparsity
    KL fine-tune (Karvonen 2025):  KL + α·MSE(a, â)/Var(a) + sparsity, from a trained local SAE

where the later streams are the residual streams entering the blocks after the splice's own
(:func:`downstream_hooks`).

The sparsity term is the SAE's own (L1 for :class:`~sae_lib.ReLUSAE`, with coefficient λ/d as in the
paper; TopK and MP SAEs are sparse by construction). :class:`EndToEnd` plugs into the one trainer,
:func:`~sae_lib.train_sae`, whose data rows are then token sequences instead of activations.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from transformer_lens import HookedTransformer

from .saes import SAE
from .training import Reconstruction
from .splicing import check_hook, check_sae_fits, check_tokens, harvest, hook_layer, kl_divergence, run_original, run_spliced
from .util import real_number


def downstream_hooks(model: HookedTransformer, hook: str) -> list[str]:
    """The residual streams whose reconstruction e2e+ds asks for, after a splice at ``hook`` in block L.

    The authors' choice (their GPT-2 e2e+ds configurations): for a splice at ``blocks.L.hook_resid_pre``,
    the streams entering every later block, ``blocks.{L+1}.hook_resid_pre`` ... ``blocks.{n-1}.hook_resid_pre``.
    The stream after the last block is left out: it only feeds the unembedding, whose output the KL term
    already covers. A splice anywhere else inside block L (``hook_resid_mid``, ``hook_mlp_out``, ...)
    changes the same streams and gets the same list. ``blocks.L.hook_resid_post`` is the very tensor that
    enters block L+1, so a splice there starts one block later: a term on the spliced activation itself
    would be the local MSE, not a downstream one. Near the output the list can be empty (any hook of the
    last block, or ``hook_resid_post`` of the one before it).
    """
    layer = hook_layer(check_hook(model, hook))
    if layer is None:
        raise ValueError(f"downstream layers are defined for hooks inside a block, not {hook!r}")
    first = layer + 2 if hook == f"blocks.{layer}.hook_resid_post" else layer + 1
    return [f"blocks.{i}.hook_resid_pre" for i in range(first, model.cfg.n_layers)]


class EndToEnd:
    """The e2e objective, optionally with downstream reconstruction (e2e+ds).

    * ``EndToEnd(model, hook)``: KL + sparsity (the paper's SAE_e2e).
    * ``EndToEnd(model, hook, kl_coeff=0.5, downstream_coeff=2.5)``: SAE_e2e+ds; the downstream term is
      ``downstream_coeff / n`` times the summed MSE over the ``n`` :func:`downstream_hooks` (or the
      ``downstream`` hooks given). Where no stream is left between the splice and the output (a splice in
      the last block) that list is empty, and e2e+ds is an error unless ``downstream`` names the hooks.
    * ``EndToEnd(model, hook, mse_coeff=1.0)``: KL plus the local reconstruction error at the splice,
      ``mse_coeff · MSE(a, â) / Var(a)`` (the variance per element of the first batch's activations, so
      the term reads as a fraction of variance unexplained and weighs about as much as the KL on a real
      model). Karvonen's fine-tune: a local SAE trained a little longer on this objective
      (``train_sae(..., init_b_dec=False)``, so training starts from the trained SAE).

    The model must be frozen (``requires_grad=False``); gradients still flow through its later blocks
    into the SAE. Data rows are token sequences, shape (n_sequences, seq_len).

    A splice in block L changes nothing before block L, so each step runs blocks 0 to L-1 once, without
    gradients, and both the original and the spliced runs start there (TransformerLens's
    ``start_at_layer``): the same loss and gradients as running the whole model twice, for less work, the
    more so the deeper the splice. ``start_at_splice=False`` runs the whole model twice (for checking).

    **The tail only.** The data rows may also be the residual stream *at the splice* itself, float
    sequences of shape (n_sequences, seq_len, d_model), for a splice at ``blocks.L.hook_resid_pre`` or
    ``blocks.L.hook_resid_post``: an activation store harvested in sequence order (the model is frozen,
    so those activations never change). Then nothing before the splice runs at all: each step runs the
    blocks after it twice, once without gradients for the original distribution, once spliced.

    **KL at some positions.** ``kl_positions=f`` (0 < f ≤ 1) takes the KL term at a share ``f`` of the
    positions, drawn afresh at every step (the same positions in every sequence of the batch), so the
    final norm, the unembedding and the softmax over the vocabulary run only there. The blocks still run
    on every position, and gradients reach the SAE's codes at every position through attention. The
    drawn mean is an unbiased estimate of the mean over all positions, with more variance: a cheaper
    step, not the same one (``bench/bench_e2e.py`` measures the trade). ``seed`` draws the positions.
    """

    def __init__(
        self, model: HookedTransformer, hook: str, *, kl_coeff: float = 1.0, downstream_coeff: float = 0.0,
        downstream: Sequence[str] | None = None, mse_coeff: float = 0.0, start_at_splice: bool = True,
        kl_positions: float = 1.0, seed: int = 0,
    ):
        self.model, self.hook = model, check_hook(model, hook)
        self.start = hook_layer(self.hook) if start_at_splice else None  # None: run from the tokens
        self.entry = _entry(model, self.hook)  # (layer, hook) where residual rows enter, or None
        self.kl_coeff = real_number("kl_coeff", kl_coeff, low=0)
        self.downstream_coeff = real_number("downstream_coeff", downstream_coeff, low=0)
        self.mse_coeff = real_number("mse_coeff", mse_coeff, low=0)
        self.variance: float | None = None  # of the activation at the splice, per element (first batch)
        self.kl_positions = real_number("kl_positions", kl_positions, low=0, high=1, low_open=True)
        self._positions = torch.Generator().manual_seed(seed)
        if self.kl_coeff == 0 and self.downstream_coeff == 0 and self.mse_coeff == 0:
            raise ValueError("kl_coeff, downstream_coeff and mse_coeff are all 0: nothing would be trained")
        if any(p.requires_grad for p in model.parameters()):
            raise ValueError("freeze the model first (requires_grad_(False) on its parameters): only the SAE trains")
        if isinstance(downstream, str):
            raise TypeError(f"downstream must be a list of hook names, got the string {downstream!r}")
        self.downstream = [] if self.downstream_coeff == 0 else [
            check_hook(model, h) for h in (downstream if downstream is not None else downstream_hooks(model, hook))
        ]
        if self.downstream_coeff and not self.downstream:
            raise ValueError(
                f"no residual stream between the splice at {hook!r} and the output of {model.cfg.model_name} "
                f"({model.cfg.n_layers} blocks), so e2e+ds has no downstream term there: splice earlier, name "
                "the streams with downstream=[...], or use plain e2e (downstream_coeff=0)"
            )

    def check_data(self, sae: SAE, data: Tensor) -> None:
        check_sae_fits(self.model, sae, self.hook)
        if isinstance(data, Tensor) and data.is_floating_point() and data.ndim == 3:
            self.check_residuals(data)
        else:
            check_tokens(self.model, data)

    def check_residuals(self, data: Tensor) -> None:
        """Residual rows for the tail-only path: (n_sequences, seq_len, d_model), at a resid hook."""
        if self.entry is None:
            raise ValueError(f"residual-stream rows can stand in for tokens only at a residual-stream hook "
                             f"(blocks.L.hook_resid_pre, or hook_resid_post before the last block), not "
                             f"{self.hook!r}: pass token ids instead")
        d_model, n_ctx = self.model.cfg.d_model, self.model.cfg.n_ctx
        if data.ndim != 3 or data.shape[2] != d_model or data.shape[1] > n_ctx:
            raise ValueError(f"residual rows must be (n_sequences, seq_len <= {n_ctx}, d_model = {d_model}), "
                             f"the stream at {self.hook} in sequence order; got {tuple(data.shape)}")

    @torch.no_grad()
    def activation_sample(self, data: Tensor, n_sequences: int = 256) -> Tensor:
        """The activations at the splice of (up to) the first ``n_sequences`` rows, flat (N, d_model):
        what an initialisation that reads activations (the pre-bias, :class:`~sae_lib.training.TargetL0`)
        sees."""
        if data.is_floating_point():
            acts = data[:n_sequences].float()
        else:
            acts = harvest(self.model, data[:n_sequences], self.hook, progress=False)
        return acts.reshape(-1, acts.shape[-1])

    @torch.no_grad()
    def initialize(self, sae: SAE, data: Tensor) -> None:
        """Pre-bias at the mean activation over (up to) the first 256 sequences, as for local SAEs."""
        sae.b_dec.copy_(self.activation_sample(data).mean(0).to(sae.b_dec))

    def __call__(self, sae: SAE, batch: Tensor, dead_mask: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        hook = self.hook
        with torch.no_grad():
            if batch.is_floating_point():  # the residual stream at the splice: run the tail only
                self.check_residuals(batch)
                layer, hook = self.entry
                start, inputs = {"start_at_layer": layer}, batch.to(sae.W_dec.dtype)
            else:
                start = {} if self.start is None else {"start_at_layer": self.start}
                inputs = batch if self.start is None else self.model(batch, stop_at_layer=self.start)
            start["positions"] = self._draw_positions(batch.shape[1])
            original = run_original(self.model, inputs, hook, capture=self.downstream, **start)
        spliced = run_spliced(self.model, inputs, hook, sae, capture=self.downstream, **start)
        terms = {}
        if self.kl_coeff:
            terms["kl"] = self.kl_coeff * kl_divergence(original.logits, spliced.logits)
        if self.downstream:
            mse = sum(F.mse_loss(spliced.acts[h], original.acts[h]) for h in self.downstream)
            terms["downstream"] = self.downstream_coeff / len(self.downstream) * mse
        if self.mse_coeff:
            x = spliced.x.detach()
            if self.variance is None:
                self.variance = x.reshape(-1, x.shape[-1]).var(0).mean().item()
            terms["mse"] = self.mse_coeff / self.variance * F.mse_loss(spliced.x_hat, x)
        terms.update(sae.extra_losses(spliced.x, spliced.x_hat, spliced.z, dead_mask))
        return terms, spliced.z

    def _draw_positions(self, seq_len: int) -> Tensor | None:
        """This step's positions for the KL (sorted), or None for all of them."""
        if self.kl_positions == 1:
            return None
        n = max(1, round(self.kl_positions * seq_len))
        return torch.randperm(seq_len, generator=self._positions)[:n].sort().values


def _entry(model: HookedTransformer, hook: str) -> tuple[int, str] | None:
    """Where rows of the residual stream at ``hook`` enter the model: (block, that block's resid_pre
    hook). ``blocks.L.hook_resid_post`` is the very tensor that enters block L+1. None for other hooks,
    and for the output of the last block (nothing is left to run after it)."""
    layer = hook_layer(hook)
    if layer is None:
        return None
    if hook == f"blocks.{layer}.hook_resid_pre":
        return layer, hook
    if hook == f"blocks.{layer}.hook_resid_post" and layer + 1 < model.cfg.n_layers:
        return layer + 1, f"blocks.{layer + 1}.hook_resid_pre"
    return None


def kl_finetune(
    model: HookedTransformer, hook: str, sae: SAE, *, local_l1: float, sample: Tensor, target_l0: float,
    adapt_steps: int, mse_coeff: float = 1.0, rate: float = 0.05,
):
    """Karvonen's fine-tune of a trained local ReLU SAE: the objective to train it on a little longer.

    KL + ``mse_coeff``·MSE/Var(a) (:class:`EndToEnd`), and the L1 weight the SAE was trained with,
    ``local_l1`` (against the plain MSE), divided by the same variance (that of ``sample``, activations
    at the splice), so that sparsity weighs against reconstruction as it did; then steered by
    :class:`~sae_lib.training.TargetL0` to hold ``target_l0``. Train with ``init_b_dec=False``."""
    from .training import TargetL0

    variance = sample.reshape(-1, sample.shape[-1]).float().var(0).mean().item()
    TargetL0._set(sae, local_l1 / variance)
    inner = EndToEnd(model, hook, mse_coeff=mse_coeff)
    return TargetL0(target_l0, adapt_steps=adapt_steps, inner=inner, rate=rate)


OBJECTIVES = ("local", "e2e", "e2e+ds")


def make_objective(
    kind: str, model: HookedTransformer, hook: str, *, downstream_coeff: float = 2.5,
    downstream: Sequence[str] | None = None,
):
    """The paper's three objectives by name: ``"local"`` (:class:`~sae_lib.training.Reconstruction`,
    trained on harvested activations), ``"e2e"`` (KL) and ``"e2e+ds"`` (½·KL + downstream MSE, β = 2.5
    as the paper used at layers 2 and 6; pass 0.05 for a splice near the output, as at its layer 10).
    ``downstream`` (e2e+ds only) replaces the default streams, :func:`downstream_hooks`."""
    if kind == "local":
        return Reconstruction()
    if kind == "e2e":
        return EndToEnd(model, hook)
    if kind == "e2e+ds":
        return EndToEnd(model, hook, kl_coeff=0.5, downstream_coeff=downstream_coeff, downstream=downstream)
    raise ValueError(f"unknown objective {kind!r}; use one of {OBJECTIVES}")
