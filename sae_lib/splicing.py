"""Reading and rewriting a transformer's activations at a named hook.

Every TransformerLens model (GPT-2, or the book's tiny language model) names its activations, e.g.
``blocks.6.hook_resid_pre`` is the residual stream entering block 6. This module does the three
things Part III needs at such a hook: *harvest* the activations (to train a local SAE), *splice* an
SAE in (replace the activation by the SAE's reconstruction and let the rest of the model run on it),
and *measure* what the splice costs the model: the cross-entropy increase and the KL divergence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from transformer_lens import HookedTransformer

from .metrics import fire_counts
from .saes import SAE, ReLUSAE
from .util import is_integer, positive_int, progress_bar

_LAYER = re.compile(r"^blocks\.(\d+)\.")


def hook_layer(hook: str) -> int | None:
    """The block a hook lives in (``blocks.6.hook_resid_pre`` -> 6); ``None`` for hooks outside blocks."""
    match = _LAYER.match(hook)
    return int(match.group(1)) if match else None


def resid_hook(model: HookedTransformer, layer: int, kind: str = "resid_pre") -> str:
    """The name of the residual-stream hook at ``layer``, checked against the model's depth."""
    n_layers = model.cfg.n_layers
    if not is_integer(layer) or not 0 <= layer < n_layers:
        raise ValueError(
            f"layer {layer!r} is out of range: {model.cfg.model_name} has {n_layers} blocks (layers 0 to {n_layers - 1})"
        )
    return check_hook(model, f"blocks.{int(layer)}.hook_{kind}")


def check_hook(model: HookedTransformer, hook: str) -> str:
    """Return ``hook`` if the model has it; otherwise fail with the names it does have nearby."""
    if hook in model.hook_dict:
        return hook
    layer = hook_layer(hook)
    if layer is not None and layer >= model.cfg.n_layers:
        raise ValueError(
            f"the model has no hook {hook!r}: layer {layer} is out of range for {model.cfg.model_name}, "
            f"which has {model.cfg.n_layers} blocks (layers 0 to {model.cfg.n_layers - 1})"
        )
    examples = [name for name in model.hook_dict if name.startswith("blocks.0.")][:8]
    raise ValueError(f"the model has no hook {hook!r}; hooks look like {examples} (see model.hook_dict)")


def check_tokens(model: HookedTransformer, tokens: Tensor) -> Tensor:
    """Token ids as a (batch, pos) integer tensor that fits the model's vocabulary and context."""
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.is_floating_point():
        shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(f"tokens must be a (batch, pos) integer tensor of token ids; got {shape}")
    if tokens.shape[1] > model.cfg.n_ctx:
        raise ValueError(f"sequences of {tokens.shape[1]} tokens exceed the model's context of {model.cfg.n_ctx}")
    if len(tokens) and (tokens.min() < 0 or tokens.max() >= model.cfg.d_vocab):
        raise ValueError(f"token ids must lie in [0, {model.cfg.d_vocab}); got {tokens.min()} to {tokens.max()}")
    return tokens


def _stop_after(hook: str) -> int | None:
    """Run only as far as the block that holds ``hook`` (harvesting needs nothing later)."""
    layer = hook_layer(hook)
    return None if layer is None else layer + 1


def activation_size(model: HookedTransformer, hook: str) -> int:
    """The size of the activation vector at ``hook`` (what an SAE spliced there needs as ``d_in``)."""
    probe = torch.zeros(1, 1, dtype=torch.long, device=model.cfg.device)
    with torch.no_grad():
        _, cache = model.run_with_cache(probe, names_filter=check_hook(model, hook), stop_at_layer=_stop_after(hook))
    act = cache[hook]
    if act.ndim != 3:
        raise ValueError(f"hook {hook!r} carries activations of shape {tuple(act.shape)}; SAEs here need (batch, pos, d)")
    return act.shape[-1]


def check_sae_fits(model: HookedTransformer, sae: SAE, hook: str) -> None:
    """Fail clearly if ``sae`` cannot be spliced at ``hook`` because the sizes differ."""
    size = activation_size(model, hook)
    if sae.d_in != size:
        raise ValueError(
            f"{type(sae).__name__} has d_in={sae.d_in}, but activations at {hook!r} of {model.cfg.model_name} "
            f"have size {size}; build the SAE with d_in={size}"
        )


def _batches(tokens: Tensor, batch_size: int, desc: str | None, progress: bool):
    starts = range(0, len(tokens), positive_int("batch_size", batch_size))
    bar = progress_bar(starts, desc=desc, show=progress and bool(desc))
    for start in bar:
        yield tokens[start : start + batch_size]


@torch.no_grad()
def harvest(
    model: HookedTransformer, tokens: Tensor, hook: str, *, batch_size: int = 32, progress: bool = True,
) -> Tensor:
    """The activations at ``hook`` for every token, shape (n_sequences, pos, d), on the CPU.

    Runs the model only as far as the block holding the hook, in batches, with a progress bar.
    """
    check_hook(model, hook)
    tokens = check_tokens(model, tokens)
    device = model.cfg.device
    parts = []
    for batch in _batches(tokens, batch_size, f"harvesting {hook}", progress):
        _, cache = model.run_with_cache(batch.to(device), names_filter=hook, stop_at_layer=_stop_after(hook))
        parts.append(cache[hook].float().cpu())
    return torch.cat(parts)


@dataclass
class Run:
    """One forward pass with (or without) an SAE spliced in at ``hook``."""

    logits: Tensor  # (batch, pos, vocab)
    x: Tensor  # the model's own activation at the hook
    x_hat: Tensor | None = None  # what the SAE handed on instead (None when nothing was spliced)
    z: Tensor | None = None  # the SAE's codes
    acts: dict[str, Tensor] = field(default_factory=dict)  # activations captured at other hooks


def _capture_hooks(capture: Sequence[str], store: dict) -> list:
    def save(act, hook):
        store[hook.name] = act

    return [(name, save) for name in capture]


def _forward(model: HookedTransformer, tokens: Tensor, fwd_hooks: list, start_at_layer: int | None,
             positions: Tensor | None) -> Tensor:
    """The logits; with ``positions``, only at those positions of every sequence: the blocks run on
    the whole sequence (attention needs it), the final norm and the unembedding only where asked,
    which on a 49k-token vocabulary is most of the cost of the tail of a model."""
    if positions is None:
        return model.run_with_hooks(tokens, fwd_hooks=fwd_hooks, start_at_layer=start_at_layer)
    resid = model.run_with_hooks(tokens, fwd_hooks=fwd_hooks, start_at_layer=start_at_layer,
                                 stop_at_layer=model.cfg.n_layers)[:, positions]
    if model.cfg.normalization_type is not None:  # as HookedTransformer.forward does
        resid = model.ln_final(resid)
    return model.unembed(resid)


def run_original(model: HookedTransformer, tokens: Tensor, hook: str, *, capture: Sequence[str] = (),
                 start_at_layer: int | None = None, positions: Tensor | None = None) -> Run:
    """The unmodified model: its logits, its activation at ``hook`` and at the ``capture`` hooks.
    With ``start_at_layer=L``, ``tokens`` is instead the residual stream entering block L, and only
    blocks L onwards run (the hooks must lie there). With ``positions`` (indices along the sequence),
    the logits are only those positions', shape (batch, len(positions), vocab)."""
    store: dict[str, Tensor] = {}
    logits = _forward(model, tokens, _capture_hooks([hook, *capture], store), start_at_layer, positions)
    return Run(logits=logits, x=store[hook], acts={name: store[name] for name in capture})


def run_spliced(
    model: HookedTransformer, tokens: Tensor, hook: str, sae: SAE, *, capture: Sequence[str] = (),
    start_at_layer: int | None = None, positions: Tensor | None = None, **sae_kwargs
) -> Run:
    """Run the model with ``sae``'s reconstruction in place of the activation at ``hook``.

    Everything after the hook sees ``x_hat`` instead of ``x``. The model's weights are not touched, but
    gradients flow from the logits back through all later blocks into the SAE: that is what end-to-end
    training needs. Extra keyword arguments go to the SAE (e.g. ``k=`` for TopK and MP SAEs);
    ``start_at_layer`` and ``positions`` are as for :func:`run_original`.
    """
    store: dict[str, Tensor] = {}

    def splice(act, hook):
        x_hat, z = sae(act, **sae_kwargs)
        store["x"], store["x_hat"], store["z"] = act, x_hat, z
        return x_hat.to(act.dtype)

    logits = _forward(model, tokens, [(hook, splice), *_capture_hooks(capture, store)], start_at_layer, positions)
    return Run(logits=logits, x=store.pop("x"), x_hat=store.pop("x_hat"), z=store.pop("z"), acts=store)


def identity_sae(d_in: int) -> ReLUSAE:
    """An SAE that hands back its input exactly: atoms ``+e_i`` and ``−e_i``, encoder = decoder transpose,
    so ``x_hat = ReLU(x) − ReLU(−x) = x``. Splicing it must change nothing: the sanity check of a splice."""
    sae = ReLUSAE(d_in, 2 * d_in, l1_coeff=0.0)
    eye = torch.eye(d_in)
    with torch.no_grad():
        sae.W_dec.copy_(torch.cat([eye, -eye]))
        sae.W_enc.copy_(sae.W_dec.T)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def kl_divergence(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """KL(p ‖ q) between the next-token distributions given by two sets of logits: summed over the
    vocabulary, averaged over tokens. With p the original model and q the spliced one, this is the
    e2e paper's training signal: how much information about the model's prediction the splice loses."""
    log_p = F.log_softmax(logits_p.float(), dim=-1)
    log_q = F.log_softmax(logits_q.float(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def next_token_ce(logits: Tensor, tokens: Tensor) -> Tensor:
    """Cross-entropy of predicting each next token, averaged over all predicted positions."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten())


def per_sequence_ce(logits: Tensor, tokens: Tensor) -> Tensor:
    """Each sequence's mean next-token cross-entropy, shape (batch,)."""
    losses = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="none")
    return losses.reshape(len(tokens), -1).mean(1)


CACHED_LOG_PROBS = 2**28  # floats (1 GiB): up to this many, the original next-token log-probs are kept


class HeldOut:
    """Held-out text prepared once for many splice evaluations at one hook.

    A splice at a hook in block ``L`` changes nothing before block ``L``. So the residual stream
    entering that block is computed once per sequence and kept, and every evaluation runs only blocks
    ``L`` to the end (TransformerLens's ``start_at_layer``). The original model's run is kept too: its
    cross-entropy, its activation at the hook and (for up to ``CACHED_LOG_PROBS`` floats) its
    next-token log-probabilities, so an evaluation runs the model once, not twice. Splicing near the
    output is then cheap, however deep the model is.

    ``first_position``: splice only from this position of each sequence on; earlier positions keep
    their original activation, and L0, FVU and alive counts cover only the spliced positions. The
    first position of a sequence is an *attention sink* in most pretrained LMs: every later token
    attends to it, and its residual stream is tens of times longer than the others'. SAEs are
    therefore usually trained and scored without it (``first_position=1``).
    """

    def __init__(self, model: HookedTransformer, tokens: Tensor, hook: str, *, batch_size: int = 32,
                 progress: bool = True, desc: str | None = None, first_position: int = 0):
        self.model, self.hook = model, check_hook(model, hook)
        self.tokens = check_tokens(model, tokens)
        if len(tokens) == 0 or tokens.shape[1] < 2:
            raise ValueError(f"scoring a splice needs at least one sequence of 2 or more tokens (one to predict); "
                             f"got tokens of shape {tuple(tokens.shape)}")
        if not is_integer(first_position) or not 0 <= first_position < tokens.shape[-1]:
            raise ValueError(f"first_position must be an integer in [0, {tokens.shape[-1]}), got {first_position!r}")
        self.first = int(first_position)
        self.start = hook_layer(hook)  # None: the hook is outside the blocks, so every run starts at the tokens
        keep_log_probs = tokens.numel() * model.cfg.d_vocab <= CACHED_LOG_PROBS
        self.batches, self.resid, self.acts, self.log_probs, per_seq = [], [], [], [], []
        with torch.no_grad():
            for batch in _batches(self.tokens, batch_size, desc, progress):
                batch = batch.to(model.cfg.device)
                resid = batch if self.start is None else model(batch, stop_at_layer=self.start)
                store: dict[str, Tensor] = {}
                logits = self._tail(resid, _capture_hooks([hook], store))
                self.batches.append(batch)
                self.resid.append(resid)
                self.acts.append(store[hook])
                self.log_probs.append(F.log_softmax(logits.float(), -1) if keep_log_probs else None)
                per_seq.append(per_sequence_ce(logits, batch))
        self.ce_original_per_sequence = torch.cat(per_seq).cpu()
        self.n_tokens = self.tokens.numel()
        self.n_spliced = self.tokens.shape[0] * (self.tokens.shape[1] - self.first)
        self.n_predicted = self.tokens.shape[0] * (self.tokens.shape[1] - 1)
        self.ce_original = self.ce_original_per_sequence.mean().item()  # every sequence predicts as many tokens
        flat = torch.cat([act[:, self.first:].reshape(-1, act.shape[-1]).float() for act in self.acts])
        self.total_variance = (flat - flat.mean(0)).pow(2).sum().item()  # Σ‖x − mean‖² over all tokens

    def _tail(self, resid: Tensor, hooks: list) -> Tensor:
        """Logits of the run from the hook's block onwards (or of the whole run) with ``hooks``."""
        if self.start is None:
            return self.model.run_with_hooks(resid, fwd_hooks=hooks)
        return self.model.run_with_hooks(resid, start_at_layer=self.start, fwd_hooks=hooks)

    def _original_log_probs(self, index: int) -> Tensor:
        cached = self.log_probs[index]
        return cached if cached is not None else F.log_softmax(self._tail(self.resid[index], []).float(), -1)

    def activations(self) -> Tensor:
        """The original activations at the spliced positions, shape (n_sequences, pos, d), on the CPU."""
        return torch.cat([act[:, self.first:] for act in self.acts]).float().cpu()

    @torch.no_grad()
    def ce_with(self, replace) -> dict[str, float]:
        """CE and KL(original ‖ modified) when the activation at the hook becomes ``replace(act)``:
        e.g. ``torch.zeros_like`` for zero ablation. ``replace`` sees only the spliced positions.
        ``ce_per_sequence`` (a tensor) holds each sequence's own mean CE, for intervals by resampling
        sequences (compare it with :attr:`ce_original_per_sequence`)."""
        def hook_fn(act, hook):
            if self.first == 0:
                return replace(act).to(act.dtype)
            return torch.cat([act[:, : self.first], replace(act[:, self.first:]).to(act.dtype)], dim=1)

        per_seq, kl_sum = [], 0.0
        for index, (batch, resid) in enumerate(zip(self.batches, self.resid)):
            logits = self._tail(resid, [(self.hook, hook_fn)])
            per_seq.append(per_sequence_ce(logits, batch))
            log_p, log_q = self._original_log_probs(index), F.log_softmax(logits.float(), -1)
            kl_sum += (log_p.exp() * (log_p - log_q)).sum(-1).sum().item()
        per_seq = torch.cat(per_seq).cpu()
        ce = per_seq.mean().item()
        return {"ce": ce, "ce_increase": ce - self.ce_original, "kl": kl_sum / self.n_tokens,
                "ce_per_sequence": per_seq}

    @torch.no_grad()
    def evaluate(self, sae: SAE, **sae_kwargs) -> dict[str, float]:
        """The scores of :func:`evaluate_spliced` for ``sae`` spliced in at this hook."""
        check_sae_fits(self.model, sae, self.hook)
        sums = dict(sq_err=0.0, nonzero=0.0, norm_ratio=0.0)
        fires = torch.zeros(sae.n_latents, dtype=torch.long, device=sae.W_dec.device)

        def splice(act):
            x_hat, z = sae(act, **sae_kwargs)
            x = act.float()
            sums["sq_err"] += (x - x_hat.float()).pow(2).sum().item()
            counts = fire_counts(z)
            sums["nonzero"] += counts.sum().item()
            sums["norm_ratio"] += (x_hat.float().norm(dim=-1) / x.norm(dim=-1).clamp_min(1e-8)).sum().item()
            fires.add_(counts)
            return x_hat

        costs = self.ce_with(splice)
        alive = int((fires > 0).sum())
        return {
            "ce_original": self.ce_original, "ce_spliced": costs["ce"], "ce_increase": costs["ce_increase"],
            "kl": costs["kl"], "ce_per_sequence": costs["ce_per_sequence"], "l0": sums["nonzero"] / self.n_spliced, "alive": alive,
            "dead": sae.n_latents - alive, "fvu": sums["sq_err"] / self.total_variance,
            "mse": sums["sq_err"] / (self.n_spliced * sae.d_in), "norm_ratio": sums["norm_ratio"] / self.n_spliced,
        }


def evaluate_spliced(
    model: HookedTransformer, sae: SAE, tokens: Tensor, hook: str, *, batch_size: int = 32,
    progress: bool = True, desc: str | None = None, **sae_kwargs,
) -> dict[str, float]:
    """What splicing ``sae`` in at ``hook`` does, measured over all of ``tokens`` (held-out text):

    * ``ce_original``, ``ce_spliced``, ``ce_increase``: next-token cross-entropy without and with the
      SAE, and their difference (the e2e paper's headline metric; lower is better);
    * ``kl``: KL(original ‖ spliced), per token;
    * ``l0``: mean number of active latents per token; ``alive``: latents that fire at least once over
      this fixed window of tokens (``dead`` = the rest);
    * ``fvu`` and ``mse`` of the reconstruction, and ``norm_ratio`` = mean ‖x_hat‖ / ‖x‖ (how much the
      SAE shrinks or grows the activation it hands on).

    To score several SAEs on the same text, build one :class:`HeldOut` and call its ``evaluate``:
    the part of the model before the hook then runs once, not once per SAE.
    """
    held_out = HeldOut(model, tokens, hook, batch_size=batch_size, progress=progress, desc=desc)
    return held_out.evaluate(sae, **sae_kwargs)
