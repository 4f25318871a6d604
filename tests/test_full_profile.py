"""The full-profile run of chapters 4-5: its resumable, sharded script and the results it ships."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sae_lib import paper_tree, run_in_noisy_world, run_on_tree, runs_table
from sae_lib.full_profile import RESULTS, full_profile_setting, load_full_profile, read_records
from sae_lib.noisy_world import noisy_world_sae
from sae_lib.tree_experiments import tree_scale

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import full_profile_ch45  # noqa: E402


def test_noisy_world_run_scores_both_sides_and_rejects_unknown_families():
    scores = run_in_noisy_world("mp", steps=20, seed=0, n_test=500)
    assert set(scores) == {"fvu", "l0", "mean_cos", "found_at_0.9", "dead"}
    assert 0 < scores["l0"] <= 3 and 0 < scores["mean_cos"] <= 1
    with pytest.raises(ValueError, match="family must be one of"):
        noisy_world_sae("relu")


def test_loader_filters_by_prefix_and_splits_child_magnitude(tmp_path):
    path = tmp_path / "r.jsonl"
    lines = [
        {"key": "ch4/tune_l1", "l1_coeff": 0.02, "probes": [], "seconds": 1.0},
        {"key": "ch4/relu/seed0", "family": "relu", "seed": 0, "data": {"correlation": 0.3},
         "steps": 10, "scores": {"absorption": 0.5}, "seconds": 2.0},
        {"key": "ch5/grid/mean0.75/spread0.1/mp/seed1", "family": "mp", "seed": 1,
         "data": {"correlation": 0.0, "child_magnitude": [0.75, 0.1]}, "steps": 10,
         "scores": {"absorption": 0.01}, "seconds": 3.0},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    ch4 = load_full_profile("ch4/", path)
    assert list(ch4["SAE"]) == ["relu"] and ch4.loc[0, "absorption"] == 0.5
    grid = load_full_profile("ch5/grid/", path)
    assert (grid.loc[0, "child mean"], grid.loc[0, "child spread"]) == (0.75, 0.1)
    assert full_profile_setting("ch4/tune_l1", path)["l1_coeff"] == 0.02
    with pytest.raises(ValueError, match="no full-profile runs"):
        load_full_profile("ch6/", path)
    with pytest.raises(FileNotFoundError, match="full_profile_ch45"):
        load_full_profile("ch4/", tmp_path / "missing.jsonl")


def test_shards_split_the_pieces_and_a_rerun_skips_what_is_done(tmp_path):
    out = tmp_path / "smoke.jsonl"
    command = [sys.executable, str(ROOT / "scripts" / "full_profile_ch45.py"), "--steps", "3",
               "--seeds", "1", "--out", str(out), "--only", "ch4"]
    for shard in ("0/2", "1/2"):  # one after the other: the second finds the L1 weight the first tuned
        subprocess.run(command + ["--shard", shard], check=True, capture_output=True, cwd=ROOT)
    keys = [json.loads(line)["key"] for line in out.read_text().splitlines()]
    expected = ["ch4/tune_l1"] + [f"ch4/{name}/seed0" for name in ("relu", "batchtopk", "matryoshka", "topk")]
    assert sorted(keys) == sorted(expected)  # every piece once, none twice
    again = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    assert "0 new pieces" in again.stdout and len(out.read_text().splitlines()) == len(expected)


def test_the_shipped_results_cover_every_piece_at_full_scale():
    done = read_records(RESULTS)
    l1 = {key: done[key]["l1_coeff"] for key in ("ch4/tune_l1", "ch5/tune_l1")}
    steps = {piece[0]: piece[5] for piece in full_profile_ch45.pieces(tree_scale("full"), l1)}
    assert set(steps) <= set(done), f"missing: {sorted(set(steps) - set(done))[:5]}"
    assert all(done[key]["steps"] == n for key, n in steps.items())


def test_live_runs_and_shipped_runs_make_the_same_table(tmp_path):
    run = run_on_tree(paper_tree(), {"mp": {}}, steps=3, seeds=[0], n_test=50, progress=False,
                      correlation=0.0, child_magnitude=(0.75, 0.1))[0]
    live = runs_table([run])
    record = {"key": "ch5/grid/x", "family": "mp", "seed": 0, "steps": 3, "scores": run.scores, "seconds": 1.0,
              "data": {"correlation": 0.0, "child_magnitude": [0.75, 0.1]}}
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(record) + "\n")
    shipped = load_full_profile("ch5/grid/", path).drop(columns=["key", "steps", "seconds"])
    assert list(shipped.columns) == list(live.columns)
    assert (live.loc[0, "child mean"], live.loc[0, "child spread"]) == (0.75, 0.1)
    assert shipped.loc[0].tolist() == live.loc[0].tolist()
