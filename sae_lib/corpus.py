"""The book's frozen real-text corpus: what Part III trains and scores its SAEs on offline.

About 28 MB of real English (roughly 7 million SmolLM2 tokens) from four named sources, shipped
xz-compressed in ``sae_lib/assets/corpus/`` and made by ``scripts/build_corpus.py`` from Debian
packages: Python 3.11's documentation (technical prose and code), the King James Bible (narrative),
the fortune-mod collection (quotations, jokes, dialogue) and the GCIDE dictionary (definitions with
literary quotations). None of it is the book's own text, so editing a chapter never changes the data
of another. Every load checks the file's SHA-256 against ``corpus.json``.

The split is by document and fixed: a document is held out when a hash of its name says so
(:data:`HELD_OUT_FRACTION`), so SAEs are always scored on text they never saw, and adding or editing
one document never moves another across the split.
"""

from __future__ import annotations

import functools
import hashlib
import json
import lzma
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor

from .models import hub_offline, hub_unreachable_reason
from .util import positive_int

ASSET_DIR = "assets/corpus"
REMAKE = "python scripts/build_corpus.py"
HELD_OUT_FRACTION = 0.05
WEB_TEXT = "apollo-research/Skylion007-openwebtext-tokenizer-gpt2"  # OpenWebText, GPT-2 tokens, 1024 per row
GPT2_VOCAB = 50_257
SPLITS = ("train", "held_out")


class CorpusError(RuntimeError):
    """The shipped corpus is missing, truncated or corrupt."""


@dataclass(frozen=True)
class Document:
    source: str  # "python-docs", "kjv-bible", "fortunes" or "gcide"
    name: str  # unique within its source
    text: str

    @property
    def split(self) -> str:
        return split_of(f"{self.source}/{self.name}")


def split_of(key: str) -> str:
    """``"held_out"`` for about :data:`HELD_OUT_FRACTION` of document keys, ``"train"`` for the rest,
    decided by a hash of the key alone (stable across machines and Python versions)."""
    bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64
    return "held_out" if bucket < HELD_OUT_FRACTION else "train"


def corpus_dir() -> Path:
    return Path(str(resources.files("sae_lib"))) / ASSET_DIR


def manifest() -> dict:
    """``corpus.json``: the sources, their licences and Debian package versions, and the file's hash."""
    path = corpus_dir() / "corpus.json"
    if not path.is_file():
        raise CorpusError(f"the corpus manifest {path} is missing; remake the corpus with `{REMAKE}`")
    return json.loads(path.read_text())


@functools.lru_cache(maxsize=1)
def load_corpus() -> tuple[Document, ...]:
    """Every document of the corpus, after checking the shipped file against its recorded hash."""
    info = manifest()
    path = corpus_dir() / info["file"]
    if not path.is_file():
        raise CorpusError(f"the corpus file {path} is missing; remake it with `{REMAKE}`")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != info["sha256"]:
        raise CorpusError(f"{path} is truncated or corrupt ({len(data):,d} bytes, expected {info['bytes']:,d}, "
                          f"and its SHA-256 differs from corpus.json); remake it with `{REMAKE}`")
    lines = lzma.decompress(data).decode("utf-8").splitlines()
    return tuple(Document(**json.loads(line)) for line in lines if line)


def documents(split: str | None = None, sources: tuple[str, ...] | None = None) -> list[Document]:
    """The documents of one split (``"train"`` or ``"held_out"``; ``None`` for both), optionally only
    from some sources."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    known = sorted({doc.source for doc in load_corpus()})
    if sources is not None and (unknown := set(sources) - set(known)):
        raise ValueError(f"unknown source(s) {sorted(unknown)}; the corpus has {known}")
    return [doc for doc in load_corpus()
            if (split is None or doc.split == split) and (sources is None or doc.source in sources)]


def tokenize_into_sequences(tokenizer, texts: list[str], seq_len: int, *,
                            max_sequences: int | None = None) -> Tensor:
    """Tokenize the texts, join them with the end-of-text token between, and cut into (n, seq_len) rows
    (at most ``max_sequences``: tokenizing stops once there are enough)."""
    seq_len = positive_int("seq_len", seq_len)
    limit = None if max_sequences is None else positive_int("max_sequences", max_sequences) * seq_len
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text)["input_ids"])
        ids.append(tokenizer.eos_token_id)
        if limit is not None and len(ids) >= limit:
            break
    n = len(ids) // seq_len if limit is None else min(len(ids), limit) // seq_len
    if n == 0:
        raise ValueError(f"only {len(ids)} tokens of text: not one sequence of {seq_len}")
    return torch.tensor(ids[: n * seq_len]).reshape(n, seq_len)


def corpus_sequences(tokenizer, split: str, seq_len: int, *, sources: tuple[str, ...] | None = None,
                     seed: int = 0, max_sequences: int | None = None) -> Tensor:
    """One split as (n, seq_len) token rows (all of it, or the first ``max_sequences``), documents in
    an order shuffled by ``seed`` (so rows mix the sources), each followed by the end-of-text token."""
    docs = documents(split, sources)
    order = torch.randperm(len(docs), generator=torch.Generator().manual_seed(seed)).tolist()
    return tokenize_into_sequences(tokenizer, [docs[i].text for i in order], seq_len,
                                   max_sequences=max_sequences)


def python_reference_text() -> list[str]:
    """The Python Language Reference's topic pages, as the standard library ships them for ``help()``:
    the fallback text of a machine that lacks the corpus (it is on every Python installation)."""
    from pydoc_data.topics import topics

    return [text.strip() for _, text in sorted(topics.items()) if text.strip()]


def _stream_web_text(n_sequences: int, seq_len: int) -> Tensor:
    from datasets import load_dataset

    rows = load_dataset(WEB_TEXT, split="train", streaming=True)
    pieces: list[Tensor] = []
    per_row = 1024 // seq_len
    for row in rows:
        pieces.extend(torch.tensor(row["input_ids"][: per_row * seq_len]).reshape(per_row, seq_len))
        if len(pieces) >= n_sequences:
            break
    return torch.stack(pieces[:n_sequences])


def load_text(tokenizer, n_sequences: int, seq_len: int, *, split: str = "train", web: bool = True,
              seed: int = 0) -> tuple[Tensor, str]:
    """Up to ``n_sequences`` rows of ``seq_len`` tokens, and a sentence saying where they came from.

    With ``web=True``, a GPT-2 tokenizer and the hub reachable: OpenWebText, already tokenized for
    GPT-2 (the e2e paper's corpus). Otherwise: one split of the book's frozen corpus, tokenized by
    ``tokenizer`` (:func:`corpus_sequences`). A machine without the corpus falls back to the Python
    Language Reference that ships with Python, and the note says so in capitals."""
    is_gpt2_tokenizer = len(tokenizer) == GPT2_VOCAB
    if web and is_gpt2_tokenizer and not hub_offline() and hub_unreachable_reason() is None:
        try:
            return _stream_web_text(n_sequences, seq_len), f"OpenWebText ({WEB_TEXT}), streamed"
        except Exception as error:  # noqa: BLE001 - fall back to the corpus, and say why
            print(f"Could not stream {WEB_TEXT} ({type(error).__name__}: {error}); using the book's corpus.")
    try:
        rows = corpus_sequences(tokenizer, split, seq_len, seed=seed, max_sequences=n_sequences)
    except CorpusError as error:
        rows = tokenize_into_sequences(tokenizer, python_reference_text(), seq_len, max_sequences=n_sequences)
        return rows, (f"THE BOOK'S CORPUS COULD NOT BE READ ({error}). Using the fallback instead: the Python "
                      f"Language Reference from the standard library, {len(rows)} sequences of {seq_len} tokens")
    sources = ", ".join(manifest()["sources"])
    return rows, (f"the book's frozen corpus ({sources}; scripts/build_corpus.py), {split} split: "
                  f"{len(rows)} sequences of {seq_len} tokens")
