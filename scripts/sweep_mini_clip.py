"""How the sharing result depends on the contrastive temperature and on caption completeness, over seeds.

    PYTHONPATH=. .venv/bin/python scripts/sweep_mini_clip.py [--cache .cache/mini_clip_sweep]

For every setting (temperature 0.01, 0.03 or learned; captions naming each concept with probability
1 or 0.5) and seed (0, 1), it trains a mini CLIP exactly as scripts/train_mini_clip.py does (the
shipped model, when its settings come up, is reused rather than retrained), embeds
the same held-out analysis pairs (full captions), trains a TopK SAE and an MP-SAE on them and measures
sharing (sae_lib.sharing.sharing_summary). Results go to sae_lib/assets/mini_clip/sweep.json, which
chapter 8 shows. The shipped model's settings are fixed by a rule stated before any result: CLIP's
own recipe (a learned temperature) with captions that name every shared concept (so that each
concept has both a picture side and a caption side). The file also records which setting has the best
held-out retrieval, for comparison.

Resumable: each trained model's embeddings and its analysis are cached, so a second run only does
what is missing.
Deterministic on CPU for fixed seeds (one thread). It costs eleven trainings of scripts/train_mini_clip.py
(about two minutes each on an idle core) plus about a minute of SAE training per model; the file
records the summed training time. --train-only splits the training between processes.
"""

import argparse
import json
from dataclasses import asdict
import time
from pathlib import Path

import torch

from sae_lib.image_data import CONCEPT_KINDS, scene_batch
from sae_lib.metrics import evaluate
from sae_lib.mini_clip import (LR_SCHEDULE, MiniClipConfig, MiniClipRun, WordTokenizer, embed_pairs, load_mini_clip,
                               train_mini_clip)
from sae_lib.sharing import sharing_summary, train_shared_dictionaries

ROOT = Path(__file__).resolve().parents[1]
# The analysis every model gets, and chapter 8 repeats on the shipped model.
ANALYSIS = {"pairs": 3000, "seed": 7, "k": 5, "n_atoms": 512, "steps": 1500, "batch_size": 256, "lr": 1e-3}
TRAINING = {"steps": 250, "batch_size": 256, "lr": 2e-3, "pool_size": 6000}
TEMPERATURES = (0.01, 0.03, None)  # None: learned, as in CLIP
COMPLETENESS = (1.0, 0.5)
SEEDS = (0, 1)
SHIPPED = "T=learned, captions=1.0"  # the rule: CLIP's recipe, captions naming every shared concept


def setting_name(temperature, completeness) -> str:
    return f"T={'learned' if temperature is None else temperature}, captions={completeness}"


def shipped_if_same(cfg: MiniClipConfig, completeness: float):
    """The shipped mini CLIP and its record, if scripts/train_mini_clip.py trained it with exactly these
    settings and learning-rate schedule (training is deterministic, so retraining would only repeat it);
    else None."""
    try:
        shipped = load_mini_clip()
    except FileNotFoundError:
        return None
    notes, run = shipped.extras["record"]["notes"], shipped.extras["record"]["run"]
    same = (asdict(shipped.extras["config"]) == asdict(cfg) and notes["completeness"] == completeness
            and all(notes[k] == v for k, v in TRAINING.items()) and run.get("lr_schedule") == LR_SCHEDULE)
    return (shipped.model, shipped.extras["record"]["run"]) if same else None


def train_and_embed(temperature, completeness, seed, cache: Path) -> dict:
    path = cache / f"T{temperature}_c{completeness}_s{seed}.pt"
    if path.is_file():
        return torch.load(path)
    cfg = MiniClipConfig(temperature=temperature, seed=seed)
    reused = shipped_if_same(cfg, completeness)
    if reused is not None:
        model, record = reused
        run = MiniClipRun(checkpoints=record["checkpoints"], seconds=record["seconds"])
    else:
        model, run = train_mini_clip(cfg, completeness=completeness, progress=False, **TRAINING)
    pictures, captions, scenes = scene_batch(ANALYSIS["pairs"], seed=ANALYSIS["seed"], size=cfg.image_size)
    img, txt = embed_pairs(model, pictures, [c[0] for c in captions], WordTokenizer(cfg.vocabulary))
    final = run.checkpoints[-1]
    result = {"img": img, "txt": txt, "scenes": scenes, "seconds": run.seconds, "final temperature": model.temperature,
              "gap at init": run.checkpoints[0]["centroid distance"],
              **{k: v for k, v in final.items() if k != "step"}}
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(result, path)
    return result


def analyse(result: dict) -> dict:
    x = torch.cat([result["img"], result["txt"]])
    is_image = torch.arange(len(x)) < len(result["img"])
    labels = {c: [s[c] for s in result["scenes"]] for c in CONCEPT_KINDS}
    saes = train_shared_dictionaries(x, k=ANALYSIS["k"], n_atoms=ANALYSIS["n_atoms"], steps=ANALYSIS["steps"],
                                     batch_size=ANALYSIS["batch_size"], lr=ANALYSIS["lr"], progress=False)
    out = {}
    for family, sae in saes.items():
        with torch.no_grad():
            z = sae(x)[1]
        summary = sharing_summary(z, is_image, labels, CONCEPT_KINDS)
        out.update({f"{family}: {name}": value for name, value in {**summary, "R²": evaluate(sae, x)["r2"]}.items()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "mini_clip_sweep")
    parser.add_argument("--out", type=Path, default=ROOT / "sae_lib" / "assets" / "mini_clip" / "sweep.json")
    parser.add_argument("--train-only", type=float, metavar="COMPLETENESS",
                        help="only train (and cache) the models of this caption completeness, e.g. to split the "
                             "work between two processes; a later plain run analyses everything")
    parser.add_argument("--seed", type=int, help="with --train-only: only this seed")
    parser.add_argument("--no-train", action="store_true",
                        help="write the results file from the models already trained (listing the missing ones)")
    parser.add_argument("--available-only", action="store_true",
                        help="analyse only the models already trained, and write no results file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.train_only is not None:
        for temperature in reversed(TEMPERATURES):
            for seed in [args.seed] if args.seed is not None else SEEDS:
                train_and_embed(temperature, args.train_only, seed, args.cache)
        return
    start = time.perf_counter()
    rows, missing = [], []
    for completeness in COMPLETENESS:
        for temperature in reversed(TEMPERATURES):
            for seed in SEEDS:
                path = args.cache / f"T{temperature}_c{completeness}_s{seed}.json"
                if path.is_file():
                    row = json.loads(path.read_text())
                else:
                    if (args.available_only or args.no_train) and not path.with_suffix(".pt").is_file():
                        missing.append(f"{setting_name(temperature, completeness)}, seed {seed}")
                        continue
                    result = train_and_embed(temperature, completeness, seed, args.cache)
                    row = {"setting": setting_name(temperature, completeness),
                           "temperature": "learned" if temperature is None else temperature,
                           "completeness": completeness, "seed": seed,
                           **{k: v for k, v in result.items() if k not in {"img", "txt", "scenes"}}, **analyse(result)}
                    path.write_text(json.dumps(row))
                rows.append(row)
                print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    if args.available_only:
        return
    retrieval = {}
    for row in rows:
        retrieval.setdefault(row["setting"], []).append((row["image→text R@1"] + row["text→image R@1"]) / 2)
    pick = max(retrieval, key=lambda s: sum(retrieval[s]) / len(retrieval[s]))
    record = {"command": "PYTHONPATH=. .venv/bin/python scripts/sweep_mini_clip.py",
              "rule": "CLIP's recipe (learned temperature) with captions naming every shared concept",
              "shipped": SHIPPED, "best retrieval": pick, "missing": missing, "analysis": ANALYSIS,
              "training": TRAINING, "training seconds, all models": round(sum(row["seconds"] for row in rows)),
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print(f"best held-out retrieval: {pick}; wrote {args.out} ({time.perf_counter() - start:.0f} s this run)")


if __name__ == "__main__":
    main()
