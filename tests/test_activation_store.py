"""The activation store: harvest once to disk, resume without losing or duplicating rows, drop sinks."""

import json

import pytest
import torch

from sae_lib.activation_store import ActivationStore, harvest_to_store, sink_mask
from sae_lib.splicing import harvest
from sae_lib.tiny_lm import load_tiny_lm

HOOK = "blocks.1.hook_resid_pre"


@pytest.fixture(scope="module")
def lm():
    loaded = load_tiny_lm()
    tokens, _ = loaded.extras["language"].sample(20, 16, seed=0)
    return loaded.model, tokens


def test_store_holds_exactly_the_harvested_rows(lm, tmp_path):
    model, tokens = lm
    report = harvest_to_store(model, tokens, HOOK, tmp_path, chunk_sequences=6, sink_factor=1e9, progress=False)
    store = ActivationStore(tmp_path)
    direct = harvest(model, tokens, HOOK, progress=False).reshape(-1, model.cfg.d_model)
    assert store.n_rows == report.rows_kept == tokens.numel() and report.sinks_dropped == 0
    torch.testing.assert_close(store.rows().float(), direct, atol=2e-3, rtol=1e-3)  # float16 on disk


def test_an_interrupted_harvest_resumes_without_duplicates(lm, tmp_path, monkeypatch):
    model, tokens = lm
    import sae_lib.activation_store as module

    calls = {"n": 0}
    real = module._write_json

    def crash_after_two_chunks(path, payload):
        calls["n"] += 1
        real(path, payload)
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as if the machine stopped right after recording chunk 2

    monkeypatch.setattr(module, "_write_json", crash_after_two_chunks)
    with pytest.raises(KeyboardInterrupt):
        harvest_to_store(model, tokens, HOOK, tmp_path, chunk_sequences=6, sink_factor=1e9, progress=False)
    with pytest.raises(RuntimeError, match="incomplete"):
        ActivationStore(tmp_path)
    monkeypatch.setattr(module, "_write_json", real)
    # A chunk written but not recorded (the crash came between the two) must not count twice.
    with open(tmp_path / "rows.f16", "ab") as f:
        f.write(b"\0" * 64)
    report = harvest_to_store(model, tokens, HOOK, tmp_path, chunk_sequences=6, sink_factor=1e9, progress=False)
    assert report.sequences == len(tokens) - 12
    store = ActivationStore(tmp_path)
    direct = harvest(model, tokens, HOOK, progress=False).reshape(-1, model.cfg.d_model)
    assert store.n_rows == tokens.numel()
    torch.testing.assert_close(store.rows().float(), direct, atol=2e-3, rtol=1e-3)
    again = harvest_to_store(model, tokens, HOOK, tmp_path, chunk_sequences=6, sink_factor=1e9, progress=False)
    assert again.sequences == 0  # nothing left to do


def test_a_store_of_other_tokens_is_refused(lm, tmp_path):
    model, tokens = lm
    harvest_to_store(model, tokens[:6], HOOK, tmp_path, chunk_sequences=6, progress=False)
    with pytest.raises(ValueError, match="other tokens or settings"):
        harvest_to_store(model, tokens[6:12], HOOK, tmp_path, chunk_sequences=6, progress=False)


def test_sinks_are_dropped_by_the_norm_rule(lm, tmp_path):
    norms = torch.tensor([[50.0, 1.0, 1.2, 0.9], [1.1, 30.0, 1.0, 1.0]])
    assert sink_mask(norms, 10.0).tolist() == [[True, False, False, False], [False, True, False, False]]
    model, tokens = lm
    acts = harvest(model, tokens, HOOK, progress=False).norm(dim=-1)
    factor = float((acts.max() / acts.median()) * 0.99)  # so that exactly the longest token is a sink
    report = harvest_to_store(model, tokens, HOOK, tmp_path, chunk_sequences=len(tokens), sink_factor=factor,
                              progress=False)
    assert report.sinks_dropped >= 1 and report.rows_kept == tokens.numel() - report.sinks_dropped
    info = json.loads((tmp_path / "progress.json").read_text())
    assert info["sinks_dropped"] == report.sinks_dropped and info["complete"]
