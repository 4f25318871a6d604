"""Does TargetL0's steering settle? Three rules on SmolLM2 activations, one run each, side by side.

    .venv/bin/python bench/steer_l0.py                # target L0 24, 256 steps: about 3 minutes on 1 core
    .venv/bin/python bench/steer_l0.py --target 40 --steps 512

Chapter 7's e2e SAEs missed their L0 targets in both directions (e2e-l0-24 ended at 14). This asks
why, cheaply: the same steering, the same budget (256 steps of 512 rows, learning rate 3e-3, 4,608
latents) and the same start far from the right λ, but with the local objective, whose step costs a
hundredth of an e2e step. The loop is alike: λ moves the encoder's biases a little per Adam step, so
L0 answers λ late, whatever the objective. The rows are the real-scale study's held-out activations
of SmolLM2 at its hook (harvested here if that store is missing); the last 8,192 rows are held out.

For each rule the table gives the held-out L0 at the end, the training batches' L0 over the last
tenth of the steps, the spread of the training L0 after the first eighth (the lowest and highest mean
over 16 steps) and how far λ swung (its largest over its smallest value after the first eighth).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from sae_lib.training import DAMPED_STEERING, FAST_STEERING  # noqa: E402

RULES = {  # name: TargetL0's settings
    "fast (FAST_STEERING)": FAST_STEERING,
    "slow (local study)": {"rate": 0.05, "smoothing": 0.9, "gain": 0.0},
    "damped (DAMPED_STEERING)": DAMPED_STEERING,
}


def activations() -> torch.Tensor:
    """Held-out SmolLM2 activations at the real-scale hook (python-docs): the store, or a fresh harvest."""
    import real_scale_study as study

    from sae_lib import corpus
    from sae_lib.activation_store import ActivationStore
    from sae_lib.real_scale import HOOK, SEQ_LEN
    from sae_lib.splicing import harvest

    folder = study.scratch() / "held_out" / "python-docs"
    try:
        return ActivationStore(folder).rows().float()
    except (FileNotFoundError, ValueError, RuntimeError):
        print(f"no held-out store in {folder}: harvesting 128 sequences (about a minute)")
        model, tokenizer = study.load_model()
        tokens = corpus.corpus_sequences(tokenizer, "held_out", SEQ_LEN, sources=("python-docs",),
                                         max_sequences=128)
        return harvest(model, tokens, HOOK).reshape(-1, model.cfg.d_model)


def run(rule: dict, train: torch.Tensor, test: torch.Tensor, target: float, steps: int) -> dict:
    from sae_lib import ReLUSAE, train_sae
    from sae_lib.training import TargetL0

    sae = ReLUSAE(train.shape[1], 4608, l1_coeff=0.03, seed=0)
    objective = TargetL0(target, adapt_steps=steps, **rule)
    began = time.perf_counter()
    train_sae(sae, train, steps=steps, batch_size=512, lr=3e-3, objective=objective, progress=False)
    with torch.no_grad():
        held_out = (sae.encode(test) > 0).sum(-1).float().mean().item()
    skip, l0s, lams = steps // 8, objective.l0_history, objective.history
    means = [sum(l0s[i:i + 16]) / len(l0s[i:i + 16]) for i in range(skip, steps, 16)]
    return {"held-out L0": held_out, "last tenth": sum(l0s[-steps // 10:]) / (steps // 10),
            "L0 low": min(means), "L0 high": max(means), "λ swing": max(lams[skip:]) / min(lams[skip:]),
            "seconds": time.perf_counter() - began}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", type=float, default=24.0)
    parser.add_argument("--steps", type=int, default=256)
    args = parser.parse_args()
    rows = activations()
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))
    train, test = rows[order[:-8192]], rows[order[-8192:]]
    print(f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}; "
          f"{len(train):,d} training rows, {len(test):,d} held out; target L0 {args.target:g}, "
          f"{args.steps} steps of 512 rows")
    print(f"{'rule':32s} {'held-out L0':>11s} {'last tenth':>10s} {'L0 low':>7s} {'L0 high':>7s} "
          f"{'λ swing':>8s} {'s':>5s}")
    for name, rule in RULES.items():
        r = run(rule, train, test, args.target, args.steps)
        print(f"{name:32s} {r['held-out L0']:11.1f} {r['last tenth']:10.1f} {r['L0 low']:7.1f} "
              f"{r['L0 high']:7.1f} {r['λ swing']:7.1f}x {r['seconds']:5.0f}", flush=True)


if __name__ == "__main__":
    main()
