"""Reading and rewriting a transformer's activations at a named hook.

Every TransformerLens model (GPT-2, or the book's tiny language model) names its activations, e.g.
``blocks.6.hook_resid_pre`` is the residual stream entering block 6. This module does the three
things Part III needs at such a hook: *harvest* the activations (to train a local SAE), *splice* an
SAE in (replace the activation by the SAE's reconstruction and let the rest of the model run on it),
and *measure* what the splice costs the model: the cross-entropy increase and the KL divergence.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig

from .saes import SAE, ReLUSAE
from .util import is_integer, positive_int, progress_bar

_LAYER = re.compile(r"^blocks\.(\d+)\.")


def hooked_transformer(cfg: HookedTransformerConfig, **kwargs) -> HookedTransformer:
    """``HookedTransformer(cfg)``, without the deprecation notice transformer-lens 3.x prints on every
    construction (4.x replaces the class; the book pins ``<4``). Only that one warning is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"HookedTransformer.*deprecated", category=DeprecationWarning)
        return HookedTransformer(cfg, **kwargs)


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


def run_original(model: HookedTransformer, tokens: Tensor, hook: str, *, capture: Sequence[str] = ()) -> Run:
    """The unmodified model: its logits, its activation at ``hook`` and at the ``capture`` hooks."""
    store: dict[str, Tensor] = {}
    logits = model.run_with_hooks(tokens, fwd_hooks=_capture_hooks([hook, *capture], store))
    return Run(logits=logits, x=store[hook], acts={name: store[name] for name in capture})


def run_spliced(
    model: HookedTransformer, tokens: Tensor, hook: str, sae: SAE, *, capture: Sequence[str] = (), **sae_kwargs
) -> Run:
    """Run the model with ``sae``'s reconstruction in place of the activation at ``hook``.

    Everything after the hook sees ``x_hat`` instead of ``x``. The model's weights are not touched, but
    gradients flow from the logits back through all later blocks into the SAE: that is what end-to-end
    training needs. Extra keyword arguments go to the SAE (e.g. ``k=`` for TopK and MP SAEs).
    """
    store: dict[str, Tensor] = {}

    def splice(act, hook):
        x_hat, z = sae(act, **sae_kwargs)
        store["x"], store["x_hat"], store["z"] = act, x_hat, z
        return x_hat.to(act.dtype)

    logits = model.run_with_hooks(tokens, fwd_hooks=[(hook, splice), *_capture_hooks(capture, store)])
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


@torch.no_grad()
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
    """
    check_hook(model, hook)
    check_sae_fits(model, sae, hook)
    tokens = check_tokens(model, tokens)
    if len(tokens) == 0 or tokens.shape[1] < 2:
        raise ValueError(f"evaluate_spliced needs at least one sequence of 2 or more tokens (one to predict); "
                         f"got tokens of shape {tuple(tokens.shape)}")
    device = model.cfg.device
    sums = dict(ce_original=0.0, ce_spliced=0.0, kl=0.0, sq_err=0.0, nonzero=0.0, norm_ratio=0.0)
    fired = torch.zeros(sae.n_latents, dtype=torch.bool, device=sae.W_dec.device)
    x_sum, x_sq, n_tokens, n_predicted = 0.0, 0.0, 0, 0
    for batch in _batches(tokens, batch_size, desc, progress):
        batch = batch.to(device)
        original = model(batch)
        spliced = run_spliced(model, batch, hook, sae, **sae_kwargs)
        n_pred = batch.shape[0] * (batch.shape[1] - 1)
        sums["ce_original"] += next_token_ce(original, batch).item() * n_pred
        sums["ce_spliced"] += next_token_ce(spliced.logits, batch).item() * n_pred
        sums["kl"] += kl_divergence(original, spliced.logits).item() * batch.numel()
        x, x_hat, z = spliced.x.float(), spliced.x_hat.float(), spliced.z
        sums["sq_err"] += (x - x_hat).pow(2).sum().item()
        sums["nonzero"] += (z != 0).sum().item()
        sums["norm_ratio"] += (x_hat.norm(dim=-1) / x.norm(dim=-1).clamp_min(1e-8)).sum().item()
        fired |= (z != 0).reshape(-1, sae.n_latents).any(0)
        x_sum = x_sum + x.reshape(-1, x.shape[-1]).sum(0)
        x_sq += x.pow(2).sum().item()
        n_tokens, n_predicted = n_tokens + batch.numel(), n_predicted + n_pred
    total_var = x_sq - (x_sum.pow(2).sum() / n_tokens).item()  # Σ‖x − mean‖² over all tokens
    alive = int(fired.sum())
    ce_original, ce_spliced = sums["ce_original"] / n_predicted, sums["ce_spliced"] / n_predicted
    return {
        "ce_original": ce_original, "ce_spliced": ce_spliced, "ce_increase": ce_spliced - ce_original,
        "kl": sums["kl"] / n_tokens, "l0": sums["nonzero"] / n_tokens, "alive": alive, "dead": sae.n_latents - alive,
        "fvu": sums["sq_err"] / total_var, "mse": sums["sq_err"] / (n_tokens * sae.d_in),
        "norm_ratio": sums["norm_ratio"] / n_tokens,
    }
