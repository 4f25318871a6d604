"""Train the mini CLIP that ships inside sae_lib (sae_lib/assets/mini_clip) and that chapter 8 loads.

    PYTHONPATH=. .venv/bin/python scripts/train_mini_clip.py [--temperature learned] [--completeness 1.0]

Deterministic on CPU for a fixed seed (one thread): the same command writes the same weights. The
defaults follow the rule stated in scripts/sweep_mini_clip.py (CLIP's learned temperature, captions
naming every shared concept), and the training recipe is the sweep's (sweep_mini_clip.TRAINING).
It takes about two minutes on an idle CPU core, several on a busy machine; it prints its own time
and stores it in config.json.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_mini_clip import TRAINING  # noqa: E402  (one training recipe for the sweep and the shipped model)

from sae_lib.mini_clip import MiniClipConfig, save_mini_clip, train_mini_clip  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--temperature", default="learned", help="'learned' (CLIP's choice) or a fixed value, e.g. 0.03")
parser.add_argument("--completeness", type=float, default=1.0, help="chance that a caption names each shared concept")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "sae_lib" / "assets" / "mini_clip")
args = parser.parse_args()

torch.set_num_threads(1)
start = time.perf_counter()
cfg = MiniClipConfig(temperature=None if args.temperature == "learned" else float(args.temperature), seed=args.seed)
model, run = train_mini_clip(cfg, completeness=args.completeness, **TRAINING)
seconds = time.perf_counter() - start
notes = {**TRAINING, "completeness": args.completeness, "total_seconds": round(seconds, 1), "torch": torch.__version__,
         "command": " ".join(["scripts/train_mini_clip.py", *sys.argv[1:]])}
save_mini_clip(model, run, args.out, **notes)
final = run.checkpoints[-1]
print(f"saved to {args.out} in {seconds:.0f} s (training loop {run.seconds:.0f} s); learned temperature "
      f"{model.temperature:.4f}; held-out R@1 image→text {final['image→text R@1']:.3f}, "
      f"text→image {final['text→image R@1']:.3f}")
