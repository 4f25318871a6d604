"""A tiny language model on a synthetic language whose structure we know.

End-to-end SAEs are about what a *model* uses, so testing them needs a trained model; GPT-2's
weights cannot be downloaded offline. This module makes a stand-in that is real in the way that
matters: a small transformer trained (by the code below) on a language we generate ourselves.

The language: ``n_topics`` topics, each a sparse bigram table (from every token, a few possible next
tokens drawn from the topic's own sub-vocabulary). A document mixes topics with weights drawn from a
Dirichlet distribution; each next token first picks a topic by those weights, then follows that
topic's bigram table from the current token. To predict well a model must recognise the current
token *and* infer the document's topics from its context: a little attention, a little lookup.
The model is a TransformerLens ``HookedTransformer``, so harvesting and splicing work exactly as
on GPT-2.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig

from .models import LoadedModel
from .bundle import frozen, load_bundle, save_bundle
from .hosts import hooked_transformer
from .training import lr_factor
from .util import progress_bar

PACKAGED_CHECKPOINT = "tiny_lm"  # sae_lib/assets/tiny_lm/{weights.safetensors,config.json}


@dataclass
class SyntheticLanguage:
    """Topics mixing sparse bigram tables. Build one with :meth:`generate`; draw text with :meth:`sample`."""

    successors: Tensor  # (n_topics, vocab, n_successors): the possible next tokens of each token, per topic
    weights: Tensor  # (n_topics, vocab, n_successors): their probabilities (rows sum to 1)
    topic_vocab: Tensor  # (n_topics, topic_vocab_size): the tokens each topic uses
    concentration: float  # Dirichlet concentration of a document's topic mixture (small = few topics)

    @property
    def vocab_size(self) -> int:
        return self.successors.shape[1]

    @property
    def n_topics(self) -> int:
        return self.successors.shape[0]

    @classmethod
    def generate(
        cls, *, vocab_size: int = 256, n_topics: int = 16, topic_vocab_size: int = 48, n_successors: int = 4,
        concentration: float = 0.3, seed: int = 0,
    ) -> SyntheticLanguage:
        """A random language with these sizes, fixed by ``seed``."""
        if not 1 <= n_successors <= topic_vocab_size <= vocab_size:
            raise ValueError(
                f"need 1 <= n_successors ({n_successors}) <= topic_vocab_size ({topic_vocab_size}) "
                f"<= vocab_size ({vocab_size})"
            )
        if not concentration > 0:
            raise ValueError(f"concentration must be positive, got {concentration!r}")
        gen = torch.Generator().manual_seed(seed)
        topic_vocab = torch.stack([torch.randperm(vocab_size, generator=gen)[:topic_vocab_size] for _ in range(n_topics)])
        # For each (topic, token): n_successors distinct members of the topic's sub-vocabulary.
        picks = torch.rand(n_topics, vocab_size, topic_vocab_size, generator=gen).argsort(-1)[..., :n_successors]
        successors = torch.gather(topic_vocab.unsqueeze(1).expand(-1, vocab_size, -1), 2, picks)
        # Skewed probabilities (Dirichlet(1) via normalised exponentials): some successors are likely.
        raw = -torch.rand(n_topics, vocab_size, n_successors, generator=gen).log()
        return cls(successors, raw / raw.sum(-1, keepdim=True), topic_vocab, float(concentration))

    def sample(self, n_sequences: int, seq_len: int, *, seed: int) -> tuple[Tensor, Tensor]:
        """Draw ``n_sequences`` documents of ``seq_len`` tokens; returns (tokens, topic mixtures)."""
        gen = torch.Generator().manual_seed(seed)
        # numpy's seeded Dirichlet (torch's samplers take no generator, which would break reproducibility)
        alpha = np.full(self.n_topics, self.concentration)
        mix = torch.from_numpy(np.random.default_rng(seed).dirichlet(alpha, size=n_sequences)).float()
        mix = mix.clamp_min(1e-12)
        tokens = torch.empty(n_sequences, seq_len, dtype=torch.long)
        first_topic = torch.multinomial(mix, 1, generator=gen).squeeze(1)
        slot = torch.randint(0, self.topic_vocab.shape[1], (n_sequences,), generator=gen)
        tokens[:, 0] = self.topic_vocab[first_topic, slot]
        for pos in range(1, seq_len):
            topic = torch.multinomial(mix, 1, generator=gen).squeeze(1)
            current = tokens[:, pos - 1]
            choice = torch.multinomial(self.weights[topic, current], 1, generator=gen).squeeze(1)
            tokens[:, pos] = self.successors[topic, current, choice]
        return tokens, mix

    def oracle_ce(self, tokens: Tensor, mixtures: Tensor) -> float:
        """Cross-entropy of the true next-token distribution (which knows each document's mixture) on
        ``tokens``: a floor no model can beat, since a model has to infer the mixture from the context."""
        current, following = tokens[:, :-1], tokens[:, 1:]
        # P_topic(current -> following): the weight of `following` among `current`'s successors, per topic
        hit = self.successors[:, current] == following.unsqueeze(0).unsqueeze(-1)  # (topic, n, pos, succ)
        per_topic = (self.weights[:, current] * hit).sum(-1)  # (topic, n, pos)
        prob = torch.einsum("nt,tnp->np", mixtures, per_topic)
        return -prob.log().mean().item()

    def tensors(self) -> dict[str, Tensor]:
        return {"successors": self.successors, "weights": self.weights, "topic_vocab": self.topic_vocab}


def tiny_lm_config(
    language: SyntheticLanguage, *, n_layers: int = 2, d_model: int = 64, n_heads: int = 4, n_ctx: int = 64,
    seed: int = 0,
) -> HookedTransformerConfig:
    """A GPT-2-style transformer (pre-LayerNorm, GELU MLP, learned positions) sized for the language."""
    if d_model % n_heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
    return HookedTransformerConfig(
        n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_head=d_model // n_heads, d_mlp=4 * d_model,
        d_vocab=language.vocab_size, n_ctx=n_ctx, act_fn="gelu_new", normalization_type="LN",
        model_name="tiny-synthetic-lm", seed=seed,
    )


@dataclass
class TinyLMTraining:
    """What :func:`train_tiny_lm` did."""

    losses: list[float]
    tokens_seen: int
    seconds: float


def train_tiny_lm(
    language: SyntheticLanguage, cfg: HookedTransformerConfig, *, steps: int, batch_size: int = 64,
    lr: float = 3e-3, seed: int = 0, progress: bool = True,
) -> tuple[HookedTransformer, TinyLMTraining]:
    """Train a fresh model of shape ``cfg`` on freshly sampled text (no sequence is seen twice).

    AdamW with warm-up and cosine decay, gradient clipping 1. Deterministic on CPU for a fixed seed.
    """
    torch.manual_seed(seed)
    model = hooked_transformer(cfg)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, "cosine", 0.05, 0.0, 0.05))
    losses = []
    start = time.perf_counter()
    bar = progress_bar(range(steps), desc="training the tiny LM", show=progress)
    for step in bar:
        tokens, _ = language.sample(batch_size, cfg.n_ctx, seed=seed * 1_000_003 + step)
        loss = model(tokens.to(cfg.device), return_type="loss")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % max(1, steps // 50) == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return frozen(model), TinyLMTraining(losses, steps * batch_size * cfg.n_ctx, time.perf_counter() - start)


_CONFIG_KEYS = ("n_layers", "d_model", "n_heads", "n_ctx", "seed")


def save_tiny_lm(model: HookedTransformer, language: SyntheticLanguage, path: str | Path, **notes) -> Path:
    """Write the model and its language to the directory ``path`` (a :mod:`~sae_lib.bundle`)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"language.{k}": v for k, v in language.tensors().items()})
    config = {"model": {k: getattr(model.cfg, k) for k in _CONFIG_KEYS},
              "language": {"concentration": language.concentration}, "notes": notes}
    return save_bundle(path, tensors, config)


def load_tiny_lm(path: str | Path | None = None, *, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a tiny LM saved by :func:`save_tiny_lm`; by default the one shipped inside ``sae_lib``
    (trained by ``scripts/train_tiny_lm.py``). Its weights are trained, so ``pretrained`` is True;
    ``extras`` holds the ``language`` and the training ``notes``."""
    if path is None:
        path = Path(str(resources.files("sae_lib").joinpath("assets", PACKAGED_CHECKPOINT)))
    tensors, config = load_bundle(path, "a saved tiny LM")
    language = SyntheticLanguage(
        tensors["language.successors"], tensors["language.weights"], tensors["language.topic_vocab"],
        config["language"]["concentration"],
    )
    cfg = tiny_lm_config(language, **config["model"])
    cfg.device = str(device)
    model = hooked_transformer(cfg)
    model.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
    return LoadedModel(model=frozen(model), name="tiny synthetic LM", pretrained=True,
                       extras={"language": language, "notes": config["notes"]})


def unigram_ce(tokens: Tensor, vocab_size: int) -> float:
    """Cross-entropy of the best context-free guess (token frequencies): the ceiling a model must beat."""
    counts = torch.bincount(tokens.flatten(), minlength=vocab_size).float() + 1  # add-one: no zero probability
    return -(counts / counts.sum())[tokens[:, 1:]].log().mean().item()


def plant_unread_direction(model: HookedTransformer, scale: float, *, seed: int = 0) -> Tensor:
    """Give every token's embedding a random amount of one direction that no later layer can read.

    Every read of the residual stream in a pre-LayerNorm transformer goes through a LayerNorm, and a
    LayerNorm first subtracts the mean of the vector's coordinates. So the all-ones direction
    ``u = (1, ..., 1)/√d`` is invisible to the model: adding any multiple of it changes no output.
    This adds ``a_t · u`` to the embedding of token ``t``, with ``a_t ~ N(0, scale²)``, in place, and
    returns ``u``. The residual stream then carries a high-variance direction the model never reads.
    """
    d = model.cfg.d_model
    if model.cfg.normalization_type not in ("LN", "LNPre"):
        raise ValueError("the all-ones direction is unread only when every read goes through a centring LayerNorm")
    u = torch.full((d,), 1 / math.sqrt(d))
    amounts = scale * torch.randn(model.cfg.d_vocab, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        model.embed.W_E += amounts.unsqueeze(1).to(model.embed.W_E) * u.to(model.embed.W_E)
    return u
