"""Run the full-profile experiments of chapters 4 and 5 piece by piece, resumably.

One full-profile tree SAE (15k steps of 200 samples) takes about half a minute on a 2-core CPU, and the
two chapters need a few hundred of them: more than one sitting. This script trains one SAE per *piece*
(a family, a seed and a data setting), appends its scores to a JSON-lines file as soon as it finishes,
and skips every piece already in that file. Stop it at any time; run the same command again to go on.

    python scripts/full_profile_ch45.py                      # everything, into sae_lib/assets/full_profile/
    python scripts/full_profile_ch45.py --only ch4 --limit 5  # at most five new pieces of chapter 4
    python scripts/full_profile_ch45.py --steps 50 --seeds 1 --out /tmp/smoke.jsonl   # a smoke run
    python scripts/full_profile_ch45.py --shard 0/2 & python scripts/full_profile_ch45.py --shard 1/2

Shards split the pieces between processes (one thread each) that append to the same file. No two
shards share a piece; a ReLU piece whose L1 weight another shard is still tuning waits, and the shard
re-reads the file for it after a pass over its other pieces.

The pieces are the chapters' own experiments, read from :mod:`sae_lib.tree_experiments`, at its ``full``
scale. Each line holds the piece's key, its settings, :func:`sae_lib.tree_scores` and the seconds it took.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from sae_lib import error_vs_k, paper_tree, run_in_noisy_world, run_on_tree, tune_l1
from sae_lib.full_profile import RESULTS, read_records
from sae_lib.tree_experiments import (ADAPTIVE_CORRELATION, ADAPTIVE_VARIANTS, CH4_CORRELATION, CH4_VARIANTS,
                                      CH5_TUNE_CORRELATION, GRID_CORRELATION, GRID_VARIANTS, INFERENCE_KS, MP_K2,
                                      NOISY_FAMILIES, SWEEP_CORRELATIONS, SWEEP_VARIANTS, TreeScale, busy_tree,
                                      tree_scale, with_l1)

FULL = tree_scale("full")
TUNINGS = {"ch4/tune_l1": CH4_CORRELATION, "ch5/tune_l1": CH5_TUNE_CORRELATION}  # key -> sibling correlation


def pieces(scale: TreeScale, l1: dict[str, float]):
    """Every piece as ``(key, variant name, tree_sae settings, seed, data settings, steps, extra)``, in run
    order. ``l1`` maps a tuning key to its bisected weight once that piece is done (ReLU pieces wait for it)."""
    ch4_l1, ch5_l1 = l1.get("ch4/tune_l1"), l1.get("ch5/tune_l1")
    for seed in scale.ch4_seeds:  # chapter 4: the one-shot families
        for name, settings in with_l1(CH4_VARIANTS, ch4_l1).items():
            yield (f"ch4/{name}/seed{seed}", name, settings, seed, {"correlation": CH4_CORRELATION},
                   scale.ch4_steps, None)
    for rho in SWEEP_CORRELATIONS:  # chapter 5: the correlation sweep
        for seed in scale.sweep_seeds:
            for name, settings in with_l1(SWEEP_VARIANTS, ch5_l1).items():
                yield (f"ch5/sweep/rho{rho}/{name}/seed{seed}", name, settings, seed, {"correlation": rho},
                       scale.sweep_steps, None)
    for seed in scale.k2_seeds:  # chapter 5: k = 2
        yield f"ch5/mp_k2/seed{seed}", "mp k=2", MP_K2, seed, {"correlation": 0.0}, scale.sweep_steps, None
    for mean in scale.child_means:  # chapter 5: the absorption grid
        for spread in scale.child_spreads:
            for seed in scale.grid_seeds:
                for name, settings in with_l1(GRID_VARIANTS, ch5_l1).items():
                    yield (f"ch5/grid/mean{mean}/spread{spread}/{name}/seed{seed}", name, settings, seed,
                           {"correlation": GRID_CORRELATION, "child_magnitude": (mean, spread)},
                           scale.grid_steps, None)
    for name, settings in with_l1(ADAPTIVE_VARIANTS, ch5_l1).items():  # chapter 5: adaptive sparsity
        yield (f"ch5/adaptive/{name}/seed{scale.sweep_seeds[0]}", name, settings, scale.sweep_seeds[0],
               {"correlation": ADAPTIVE_CORRELATION}, scale.adaptive_steps, "error_vs_k")
    for seed in scale.noisy_seeds:  # chapter 5: the SynthSAEBench counterpoint (not on the tree)
        for name in NOISY_FAMILIES:
            yield f"ch5/noisy/{name}/seed{seed}", name, {}, seed, {}, scale.noisy_steps, "noisy_world"


def smaller(scale: TreeScale, steps: int | None, n_seeds: int) -> TreeScale:
    """``scale`` with at most ``n_seeds`` seeds per experiment and, if ``steps`` is given, that many steps
    for every SAE (probes of the L1 bisection: at most that many): for smoke runs."""
    fields = {name: value[:n_seeds] for name, value in vars(scale).items() if name.endswith("_seeds")}
    if steps is not None:
        fields |= {name: steps for name in vars(scale) if name.endswith("_steps")}
        fields["tune_steps"] = min(scale.tune_steps, steps)
    return replace(scale, **fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file (default: the shipped one)")
    parser.add_argument("--only", choices=["ch4", "ch5"], help="run only this chapter's pieces")
    parser.add_argument("--limit", type=int, default=None, help="stop after this many new pieces")
    parser.add_argument("--steps", type=int, default=None, help="training steps per SAE (default: the full scale's)")
    parser.add_argument("--seeds", type=int, default=len(FULL.sweep_seeds),
                        help="at most this many seeds per experiment")
    parser.add_argument("--shard", default="0/1", help="I/N: run only every N-th piece, starting at the I-th")
    args = parser.parse_args()
    torch.set_num_threads(1)  # 20 × 20 SAEs: one thread is fastest

    shard, n_shards = (int(part) for part in args.shard.split("/"))
    if not 0 <= shard < n_shards:
        raise SystemExit(f"--shard must be I/N with 0 <= I < N, got {args.shard!r}")

    args.out.parent.mkdir(parents=True, exist_ok=True)

    def read_done() -> dict:
        return read_records(args.out) if args.out.exists() else {}

    print(f"{len(read_done())} pieces already in {args.out}")
    scale = smaller(FULL, args.steps, args.seeds)
    new = 0

    def write(record: dict) -> None:
        nonlocal new
        with args.out.open("a") as f:  # one short append per piece: shards do not interleave lines
            f.write(json.dumps(record) + "\n")
        new += 1
        print(f"{record['key']}: {record['seconds']:.1f} s", flush=True)

    def mine(index: int) -> bool:
        return index % n_shards == shard

    for index, (key, rho) in enumerate(TUNINGS.items()):
        if (args.only and not key.startswith(args.only)) or key in read_done() or not mine(index):
            continue
        if args.limit is not None and new >= args.limit:
            return
        start = time.perf_counter()
        tree = paper_tree()
        tuning = tune_l1(tree, tree.expected_l0(), steps=scale.tune_steps, correlation=rho)
        write({"key": key, "l1_coeff": tuning.l1_coeff, "probes": tuning.probes,
               "seconds": time.perf_counter() - start})

    waiting = True
    while waiting:  # a second pass picks up ReLU pieces whose L1 weight another shard was still tuning
        waiting = False
        done = read_done()
        l1 = {key: done[key]["l1_coeff"] for key in TUNINGS if key in done}
        for index, (key, name, settings, seed, data, steps, extra) in enumerate(pieces(scale, l1)):
            if (args.only and not key.startswith(args.only)) or not mine(index) or key in done:
                continue
            if settings.get("l1_coeff", 0) is None:
                waiting = True
                continue  # its L1 weight is not tuned yet
            if args.limit is not None and new >= args.limit:
                return
            start = time.perf_counter()
            if extra == "noisy_world":
                record = {"key": key, "family": name, "seed": seed, "steps": steps,
                          "scores": run_in_noisy_world(name, steps=steps, seed=seed)}
            else:
                tree = busy_tree(paper_tree()) if extra == "error_vs_k" else paper_tree()
                run = run_on_tree(tree, {name: settings}, steps=steps, seeds=[seed], progress=False, **data)[0]
                record = {"key": key, "family": settings.get("family", name), "settings": settings, "seed": seed,
                          "data": data, "steps": steps, "scores": run.scores}
                if extra == "error_vs_k":
                    record["error_vs_k"] = error_vs_k(run.sae, run.test.x, INFERENCE_KS)
            record["seconds"] = time.perf_counter() - start
            write(record)
        if waiting:
            time.sleep(30)
    print(f"{new} new pieces; {len(read_done())} in {args.out}")


if __name__ == "__main__":
    main()
