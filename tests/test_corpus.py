"""The frozen real-text corpus: shipped intact, split by document, none of the book's own text."""

import shutil

import pytest
import torch

from sae_lib import corpus
from sae_lib.gpt2 import gpt2_tokenizer


def test_shipped_corpus_is_intact_and_large():
    docs = corpus.load_corpus()
    info = corpus.manifest()
    assert {d.source for d in docs} == set(info["sources"]) == {"python-docs", "kjv-bible", "fortunes", "gcide"}
    assert sum(len(d.text) for d in docs) > 20_000_000  # about 5 million tokens or more
    for source, stats in info["sources"].items():
        assert stats["license"] and stats["documents"] == sum(d.source == source for d in docs)


def test_split_is_by_document_and_stable():
    held = corpus.documents("held_out")
    train = corpus.documents("train")
    assert not {(d.source, d.name) for d in held} & {(d.source, d.name) for d in train}
    assert 0.02 < len(held) / (len(held) + len(train)) < 0.1
    assert corpus.split_of("kjv-bible/Genesis 1") == corpus.split_of("kjv-bible/Genesis 1")
    assert {d.source for d in held} == {"python-docs", "kjv-bible", "fortunes", "gcide"}  # every source scored
    with pytest.raises(ValueError, match="split must be"):
        corpus.documents("test")
    with pytest.raises(ValueError, match="unknown source"):
        corpus.documents("train", sources=("wikipedia",))


def test_corpus_holds_none_of_the_books_text():
    """Editing a chapter must not change the data of another: no chapter prose in the corpus."""
    from pathlib import Path

    book = Path(__file__).resolve().parents[1] / "book"
    text = "\n".join(d.text for d in corpus.load_corpus())
    for phrase in ("sparse autoencoder", "matching pursuit", "sae_lib", "conditional orthogonality"):
        assert phrase not in text.lower(), phrase
    assert book.is_dir()  # the check above is about this repository's book


def test_corpus_sequences_are_deterministic_and_capped():
    tok = gpt2_tokenizer()
    rows = corpus.corpus_sequences(tok, "held_out", 32, max_sequences=10)
    again = corpus.corpus_sequences(tok, "held_out", 32, max_sequences=10)
    assert rows.shape == (10, 32) and rows.dtype == torch.long and torch.equal(rows, again)
    other = corpus.corpus_sequences(tok, "held_out", 32, max_sequences=10, seed=1)
    assert not torch.equal(rows, other)


def test_text_becomes_token_rows():
    tok = gpt2_tokenizer()
    rows = corpus.tokenize_into_sequences(tok, ["one two three", "four"], 3)
    assert rows.shape == (2, 3) and rows[0, 3 - 1].item() == tok("one two three")["input_ids"][-1]
    with pytest.raises(ValueError, match="not one sequence"):
        corpus.tokenize_into_sequences(tok, ["hi"], 64)


def test_load_text_offline_names_the_corpus(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    streamed = []
    monkeypatch.setattr(corpus, "_stream_web_text", lambda *a: streamed.append(a))
    tokens, note = corpus.load_text(gpt2_tokenizer(), 6, 16, web=True)
    assert not streamed, "streamed from the hub although HF_HUB_OFFLINE=1"
    assert tokens.shape == (6, 16) and "frozen corpus" in note and "train split" in note


def _copy_assets(tmp_path, monkeypatch):
    folder = tmp_path / "corpus"
    shutil.copytree(corpus.corpus_dir(), folder)
    monkeypatch.setattr(corpus, "corpus_dir", lambda: folder)
    corpus.load_corpus.cache_clear()
    return folder


def test_a_damaged_corpus_names_the_file_and_the_script(tmp_path, monkeypatch):
    folder = _copy_assets(tmp_path, monkeypatch)
    data = (folder / "corpus.jsonl.xz").read_bytes()
    (folder / "corpus.jsonl.xz").write_bytes(data[: len(data) // 2])  # truncated
    try:
        with pytest.raises(corpus.CorpusError, match=r"truncated or corrupt.*scripts/build_corpus\.py"):
            corpus.load_corpus()
        (folder / "corpus.jsonl.xz").unlink()
        with pytest.raises(corpus.CorpusError, match=r"corpus\.jsonl\.xz is missing.*build_corpus"):
            corpus.load_corpus()
        # A machine without the corpus still gets text, and is told so.
        tokens, note = corpus.load_text(gpt2_tokenizer(), 4, 16, web=False)
        assert tokens.shape == (4, 16) and "COULD NOT BE READ" in note and "Python" in note
    finally:
        corpus.load_corpus.cache_clear()
