"""An offline stand-in for automated interpretability's *detection* score. A proxy, not the real thing.

Automated interpretability (EleutherAI's delphi) shows an explainer LLM a latent's top activating
contexts, asks it for a short explanation, then shows a scorer LLM held-out contexts and asks which ones
the latent fires on: the *detection* score is how well the explanation predicts that. Both steps need a
large LLM, which a machine without the hub does not have. This module keeps the structure and replaces
the LLMs with the simplest explanation text alone can give:

* **explain** (:func:`explain_latent`): from the latent's ``n_top`` largest activations on training text,
  the ``size`` tokens it fires on most often (or, with ``context="bigram"``, the most frequent
  (previous token, token) pairs), each weighted by how often it appears there;
* **detect** (:func:`score_explanation`): on held-out text, predict "fires" wherever the token is in the
  explanation, and score against where the latent really fires (code > 0): AUROC of the weighted
  prediction, and balanced accuracy of the yes/no prediction (the mean of the hit rate and the correct
  rejection rate, so a rare latent cannot score well by never predicting it fires).

What it captures: *lexical*, token-level latents, the kind a one-line explanation like "the token
' the'" describes. What it misses: anything abstract or contextual (a latent for "inside a quotation",
"legal language", "the second item of a list") fires on many different tokens, so no small token set
predicts it and the proxy scores it low, where an LLM explainer could still describe it well. A high
proxy score means a latent is lexically interpretable; a low one does not mean it is uninterpretable.

Which latents (:func:`sample_latents`): ``n`` drawn uniformly (seeded) from those that fire on at least
``min_density`` of the training tokens, so dead and near-dead latents, which no explainer could describe
from a handful of examples, do not decide the comparison.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import torch
from torch import Tensor

from .absorption import encode_codes
from .util import positive_int, real_number, seeded_generator

N_TOP = 50  # top activations an explanation is built from (delphi shows its explainer a few dozen contexts)
SIZE = 5  # tokens (or token pairs) in an explanation
MIN_DENSITY = 1e-3  # a latent must fire on at least this share of training tokens to be sampled
NO_TOKEN = -1  # the "previous token" of a sequence's first position


def _check_text(tokens: Tensor, codes: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """Tokens (n_seq, pos) of integer ids and codes (n_seq, pos, n_latents) that fit them."""
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.is_floating_point():
        shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(f"{name}_tokens must be a (n_sequences, pos) integer tensor; got {shape}")
    if not isinstance(codes, Tensor) or codes.ndim != 3 or codes.shape[:2] != tokens.shape:
        shape = tuple(codes.shape) if isinstance(codes, Tensor) else type(codes).__name__
        raise ValueError(f"{name}_codes must be (n_sequences, pos, n_latents) = ({tokens.shape[0]}, "
                         f"{tokens.shape[1]}, ...) to fit {name}_tokens; got {shape}")
    if tokens.numel() == 0:
        raise ValueError(f"{name}_tokens is empty: there is no text")
    if tokens.min() < 0:
        raise ValueError(f"{name}_tokens holds negative ids ({int(tokens.min())})")
    return tokens.long(), codes


def previous_tokens(tokens: Tensor) -> Tensor:
    """Each position's previous token in its sequence (:data:`NO_TOKEN` at the first position)."""
    return torch.cat([torch.full_like(tokens[:, :1], NO_TOKEN), tokens[:, :-1]], dim=1)


def firing_density(codes: Tensor) -> Tensor:
    """Per latent, the share of rows (tokens) where its code is positive; codes are (..., n_latents)."""
    return (codes.reshape(-1, codes.shape[-1]) > 0).float().mean(0)


def sample_latents(density: Tensor, n: int, *, min_density: float = MIN_DENSITY, seed: int = 0) -> Tensor:
    """``n`` latents drawn uniformly without replacement (seeded) from those with ``density`` at least
    ``min_density``, in increasing order; all of them when fewer qualify."""
    n = positive_int("n", n)
    min_density = real_number("min_density", min_density, low=0, high=1, low_open=True)
    eligible = (density >= min_density).nonzero().squeeze(1)
    if len(eligible) == 0:
        raise ValueError(f"no latent fires on at least {min_density:g} of the training tokens")
    order = torch.randperm(len(eligible), generator=seeded_generator(seed))
    return eligible[order[:n]].sort().values


@dataclass(frozen=True)
class TokenExplanation:
    """A latent's explanation: tokens (or (previous, token) pairs) and how many top activations each had."""

    latent: int
    context: str  # "token" or "bigram"
    keys: tuple  # token ids, or (previous id, id) pairs
    counts: tuple[int, ...]

    def score(self, tokens: Tensor) -> Tensor:
        """The weighted prediction at every position of ``tokens`` (n_seq, pos): the count of the position's
        token (or pair) among the top activations, 0 when it is not in the explanation."""
        current = tokens.long()
        previous = previous_tokens(current)
        score = torch.zeros(tokens.shape)
        for key, count in zip(self.keys, self.counts):
            hit = current == key if self.context == "token" else (previous == key[0]) & (current == key[1])
            score[hit] = float(count)
        return score


def explain_latent(tokens: Tensor, codes: Tensor, *, latent: int = -1, n_top: int = N_TOP, size: int = SIZE,
                   context: str = "token") -> TokenExplanation:
    """Explain one latent from its top activations: ``codes`` is (n_seq, pos), that latent's codes on the
    training ``tokens``. The ``n_top`` largest positive codes are taken (all of them if fewer), and the
    explanation is the ``size`` keys that occur there most often; ties go to the key seen at the larger
    activation. ``context="bigram"`` uses (previous token, token) pairs as keys instead of tokens."""
    n_top, size = positive_int("n_top", n_top), positive_int("size", size)
    if context not in ("token", "bigram"):
        raise ValueError(f"context must be 'token' or 'bigram', got {context!r}")
    if codes.shape != tokens.shape:
        raise ValueError(f"codes must have the tokens' shape {tuple(tokens.shape)}; got {tuple(codes.shape)}")
    flat, current, previous = codes.reshape(-1).float(), tokens.reshape(-1), previous_tokens(tokens).reshape(-1)
    firing = int((flat > 0).sum())
    if firing == 0:
        raise ValueError(f"latent {latent} never fires on the training text: there is nothing to explain")
    order = torch.sort(flat, descending=True, stable=True).indices[: min(n_top, firing)].tolist()
    if context == "token":
        seen = [int(current[i]) for i in order]
    else:
        seen = [(int(previous[i]), int(current[i])) for i in order]
    counts = Counter(seen)
    first = {}
    for rank, key in enumerate(seen):
        first.setdefault(key, rank)
    keys = sorted(counts, key=lambda key: (-counts[key], first[key]))[:size]
    return TokenExplanation(int(latent), context, tuple(keys), tuple(counts[key] for key in keys))


def auroc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random negative, ties
    counting one half (the Mann-Whitney statistic, from average ranks). NaN without both classes."""
    scores, labels = scores.reshape(-1).double(), labels.reshape(-1).bool()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    values, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    upper = counts.cumsum(0).double()  # ranks 1..n; a tied group gets the mean of its ranks
    average_rank = (upper - (counts.double() - 1) / 2)[inverse]
    return float((average_rank[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def balanced_accuracy(predicted: Tensor, labels: Tensor) -> float:
    """Mean of the hit rate and the correct-rejection rate of yes/no predictions. NaN without both classes."""
    predicted, labels = predicted.reshape(-1).bool(), labels.reshape(-1).bool()
    if labels.all() or not labels.any():
        return math.nan
    return 0.5 * (float(predicted[labels].float().mean()) + float((~predicted[~labels]).float().mean()))


@dataclass(frozen=True)
class LatentDetection:
    """One latent's explanation and how well it detects the latent on held-out text."""

    latent: int
    explanation: TokenExplanation | None
    auroc: float
    balanced_accuracy: float
    held_out_fires: int  # held-out tokens where the latent fires
    note: str = ""  # why it could not be scored, if it could not


def score_explanation(explanation: TokenExplanation, tokens: Tensor, codes: Tensor) -> LatentDetection:
    """Detection on held-out text: ``codes`` is (n_seq, pos), the latent's codes on ``tokens``."""
    fires = codes.reshape(tokens.shape) > 0
    score = explanation.score(tokens)
    note = "" if 0 < int(fires.sum()) < fires.numel() else "fires on no held-out token (or on all)"
    return LatentDetection(explanation.latent, explanation, auroc(score, fires), balanced_accuracy(score > 0, fires),
                           int(fires.sum()), note)


@dataclass(frozen=True)
class DetectionProxy:
    """The proxy for one SAE: per sampled latent, and summaries over the latents that could be scored."""

    latents: tuple[LatentDetection, ...]

    def _scored(self, name: str) -> list[float]:
        return [getattr(r, name) for r in self.latents if not math.isnan(getattr(r, name))]

    @property
    def n_scored(self) -> int:
        return len(self._scored("auroc"))

    def mean(self, name: str = "auroc") -> float:
        values = self._scored(name)
        return sum(values) / len(values) if values else math.nan

    def median(self, name: str = "auroc") -> float:
        values = self._scored(name)
        return float(torch.tensor(values).median()) if values else math.nan

    def summary(self) -> dict:
        return {"latents": len(self.latents), "scored": self.n_scored, "mean_auroc": self.mean("auroc"),
                "median_auroc": self.median("auroc"), "mean_balanced_accuracy": self.mean("balanced_accuracy"),
                "median_balanced_accuracy": self.median("balanced_accuracy")}

    def rows(self) -> list[dict]:
        """One plain dict per latent, for a table."""
        return [{"latent": r.latent, "explanation": list(r.explanation.keys) if r.explanation else [],
                 "auroc": r.auroc, "balanced_accuracy": r.balanced_accuracy, "held_out_fires": r.held_out_fires,
                 "note": r.note} for r in self.latents]


def detection_proxy(train_tokens: Tensor, train_codes: Tensor, test_tokens: Tensor, test_codes: Tensor, *,
                    latents=None, n_top: int = N_TOP, size: int = SIZE, context: str = "token") -> DetectionProxy:
    """Explain each latent on the training text and score it on the held-out text.

    ``*_codes`` are (n_seq, pos, m); column ``j`` belongs to latent ``latents[j]`` (default: ``j``), so
    codes of a sample of latents are enough. A latent that never fires on the training text is recorded,
    unscored, with a note."""
    train_tokens, train_codes = _check_text(train_tokens, train_codes, "train")
    test_tokens, test_codes = _check_text(test_tokens, test_codes, "test")
    if train_codes.shape[2] != test_codes.shape[2]:
        raise ValueError(f"train_codes has {train_codes.shape[2]} latents but test_codes has {test_codes.shape[2]}")
    ids = list(range(train_codes.shape[2])) if latents is None else [int(i) for i in torch.as_tensor(latents)]
    if len(ids) != train_codes.shape[2]:
        raise ValueError(f"latents names {len(ids)} latents but the codes have {train_codes.shape[2]} columns")
    results = []
    for column, latent in enumerate(ids):
        train_column = train_codes[..., column]
        if not (train_column > 0).any():
            results.append(LatentDetection(latent, None, math.nan, math.nan,
                                           int((test_codes[..., column] > 0).sum()), "never fires on training text"))
            continue
        explanation = explain_latent(train_tokens, train_column, latent=latent, n_top=n_top, size=size,
                                     context=context)
        results.append(score_explanation(explanation, test_tokens, test_codes[..., column]))
    return DetectionProxy(tuple(results))


def sae_codes(sae, activations: Tensor, *, latents=None, batch_size: int = 4096) -> Tensor:
    """The SAE's codes for activations (..., d_in), in inference mode and in batches
    (:func:`sae_lib.absorption.encode_codes`), keeping only the columns ``latents`` (default: all)."""
    columns = None if latents is None else torch.as_tensor(latents, dtype=torch.long)
    flat = activations.reshape(-1, activations.shape[-1])
    return encode_codes(sae, flat, batch_size=batch_size, latents=columns).reshape(*activations.shape[:-1], -1)


def sae_detection_proxy(sae, train_tokens: Tensor, train_activations: Tensor, test_tokens: Tensor,
                        test_activations: Tensor, *, n_latents: int = 100, min_density: float = MIN_DENSITY,
                        seed: int = 0, **options) -> DetectionProxy:
    """The proxy for an SAE: sample latents by their firing density on the training text
    (:func:`sample_latents`), encode both texts (activations (n_seq, pos, d_in)) and run
    :func:`detection_proxy`. ``options`` go to :func:`detection_proxy` (``n_top``, ``size``, ``context``)."""
    for name, acts, tokens in (("train", train_activations, train_tokens), ("test", test_activations, test_tokens)):
        if not isinstance(acts, Tensor) or acts.ndim != 3 or acts.shape[:2] != tokens.shape \
                or acts.shape[2] != sae.d_in:
            shape = tuple(acts.shape) if isinstance(acts, Tensor) else type(acts).__name__
            raise ValueError(f"{name}_activations must be (n_sequences, pos, d_in) = (*{tuple(tokens.shape)}, "
                             f"{sae.d_in}); got {shape}")
    density = torch.zeros(sae.n_latents)
    for part in train_activations.reshape(-1, sae.d_in).split(4096):
        density += (sae_codes(sae, part) > 0).float().sum(0)
    density /= train_tokens.numel()
    latents = sample_latents(density, n_latents, min_density=min_density, seed=seed)
    return detection_proxy(train_tokens, sae_codes(sae, train_activations, latents=latents), test_tokens,
                           sae_codes(sae, test_activations, latents=latents), latents=latents, **options)
