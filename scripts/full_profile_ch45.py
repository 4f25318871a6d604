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

The pieces use the settings of the chapters' ``full`` profile (``by_profile(full=...)`` in
book/04_hierarchy.py and book/05_matching_pursuit.py); keep the two in step when either changes.
Each line holds the piece's key, its settings, :func:`sae_lib.tree_scores` and the seconds it took.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sae_lib import Concept, ConceptTree, error_vs_k, paper_tree, run_in_noisy_world, run_on_tree, tune_l1
from sae_lib.full_profile import RESULTS, read_records

FULL_STEPS, TUNE_STEPS, SEEDS, GRID_SEEDS = 15_000, 5_000, list(range(10)), [0, 1, 2]
CORRELATIONS, CHILD_MEANS, CHILD_SPREADS = [0.0, 0.3, 0.6, 0.9], [0.75, 1.5, 3.0], [0.1, 0.25, 0.5]
ONE_SHOT = {"batchtopk": {}, "matryoshka": {}, "topk": {}}


def busy_tree() -> ConceptTree:
    """Chapter 5's tree for adaptive sparsity: the paper's concepts, top-level ones firing independently."""
    return ConceptTree(tuple(Concept(0.3 if c.children else 0.15, c.children) for c in paper_tree().roots),
                       exclusive=False)


def pieces(seeds: list[int], grid_seeds: list[int], l1: dict[str, float]):
    """Every piece as ``(key, family name, tree_sae settings, seed, data settings, extra)``, in run order.
    ``l1`` maps a tuning key to its bisected weight once that piece is done (ReLU pieces wait for it)."""
    ch4_l1, ch5_l1 = l1.get("ch4/tune_l1"), l1.get("ch5/tune_l1")
    for seed in seeds:  # chapter 4: four families at rho = 0.3
        for name, settings in {"relu": {"l1_coeff": ch4_l1}, **ONE_SHOT}.items():
            yield f"ch4/{name}/seed{seed}", name, settings, seed, {"correlation": 0.3}, None
    for rho in CORRELATIONS:  # chapter 5: the correlation sweep
        for seed in seeds:
            for name, settings in {"relu": {"l1_coeff": ch5_l1}, "mp": {}}.items():
                yield f"ch5/sweep/rho{rho}/{name}/seed{seed}", name, settings, seed, {"correlation": rho}, None
    for seed in seeds:  # chapter 5: k = 2
        yield f"ch5/mp_k2/seed{seed}", "mp", {"k": 2}, seed, {"correlation": 0.0}, None
    for mean in CHILD_MEANS:  # chapter 5: the absorption grid
        for spread in CHILD_SPREADS:
            for seed in grid_seeds:
                for name, settings in {"relu": {"l1_coeff": ch5_l1}, "mp": {}, **ONE_SHOT}.items():
                    yield (f"ch5/grid/mean{mean}/spread{spread}/{name}/seed{seed}", name, settings, seed,
                           {"correlation": 0.0, "child_magnitude": (mean, spread)}, None)
    for name, settings in {"relu": {"l1_coeff": ch5_l1}, "topk": {"k": 2}, "mp": {"k": 2}}.items():
        yield (f"ch5/adaptive/{name}/seed{seeds[0]}", name, settings, seeds[0], {"correlation": 0.3},
               "error_vs_k")
    for seed in grid_seeds:  # chapter 5: the SynthSAEBench counterpoint (not on the tree)
        for name in ["topk", "batchtopk", "mp"]:
            yield f"ch5/noisy/{name}/seed{seed}", name, {}, seed, {}, "noisy_world"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file (default: the shipped one)")
    parser.add_argument("--only", choices=["ch4", "ch5"], help="run only this chapter's pieces")
    parser.add_argument("--limit", type=int, default=None, help="stop after this many new pieces")
    parser.add_argument("--steps", type=int, default=FULL_STEPS, help="training steps per SAE (smoke runs: small)")
    parser.add_argument("--seeds", type=int, default=len(SEEDS), help="how many of the 10 seeds to run")
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
    seeds, grid_seeds = SEEDS[: args.seeds], GRID_SEEDS[: args.seeds]
    tune_steps = min(TUNE_STEPS, args.steps)
    new = 0

    def write(record: dict) -> None:
        nonlocal new
        with args.out.open("a") as f:  # one short append per piece: shards do not interleave lines
            f.write(json.dumps(record) + "\n")
        new += 1
        print(f"{record['key']}: {record['seconds']:.1f} s", flush=True)

    def mine(index: int) -> bool:
        return index % n_shards == shard

    for index, (key, rho) in enumerate((("ch4/tune_l1", 0.3), ("ch5/tune_l1", 0.0))):
        if (args.only and not key.startswith(args.only)) or key in read_done() or not mine(index):
            continue
        if args.limit is not None and new >= args.limit:
            return
        start = time.perf_counter()
        tree = paper_tree()
        tuning = tune_l1(tree, tree.expected_l0(), steps=tune_steps, correlation=rho)
        write({"key": key, "l1_coeff": tuning.l1_coeff, "probes": tuning.probes,
               "seconds": time.perf_counter() - start})

    waiting = True
    while waiting:  # a second pass picks up ReLU pieces whose L1 weight another shard was still tuning
        waiting = False
        done = read_done()
        l1 = {key: done[key]["l1_coeff"] for key in ("ch4/tune_l1", "ch5/tune_l1") if key in done}
        for index, (key, name, settings, seed, data, extra) in enumerate(pieces(seeds, grid_seeds, l1)):
            if (args.only and not key.startswith(args.only)) or not mine(index) or key in done:
                continue
            if settings.get("l1_coeff", 0) is None:
                waiting = True
                continue  # its L1 weight is not tuned yet
            if args.limit is not None and new >= args.limit:
                return
            start = time.perf_counter()
            if extra == "noisy_world":
                record = {"key": key, "family": name, "seed": seed, "steps": args.steps,
                          "scores": run_in_noisy_world(name, steps=args.steps, seed=seed)}
            else:
                tree = busy_tree() if extra else paper_tree()
                run = run_on_tree(tree, {name: settings}, steps=args.steps, seeds=[seed], progress=False,
                                  **data)[0]
                record = {"key": key, "family": name, "settings": settings, "seed": seed,
                          "data": data, "steps": args.steps, "scores": run.scores}
                if extra == "error_vs_k":
                    record["error_vs_k"] = error_vs_k(run.sae, run.test.x, list(range(1, 21)))
            record["seconds"] = time.perf_counter() - start
            write(record)
        if waiting:
            time.sleep(30)
    print(f"{new} new pieces; {len(read_done())} in {args.out}")


if __name__ == "__main__":
    main()
