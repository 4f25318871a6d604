"""Train the tiny language model that ships inside sae_lib (sae_lib/assets/tiny_lm) and that chapter 7 loads.

    PYTHONPATH=. .venv/bin/python scripts/train_tiny_lm.py [--steps 3000] [--out sae_lib/assets/tiny_lm]

Deterministic on CPU for a fixed seed (one thread). It takes about a quarter of an hour on one CPU core.
tests/test_tiny_lm.py retrains a smaller model with the same code, so the recipe stays checked.
"""

import argparse
from pathlib import Path

import torch

from sae_lib.tiny_lm import SyntheticLanguage, save_tiny_lm, tiny_lm_config, train_tiny_lm, unigram_ce

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=3000)
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--lr", type=float, default=3e-3)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "sae_lib" / "assets" / "tiny_lm")
args = parser.parse_args()

torch.set_num_threads(1)
language = SyntheticLanguage.generate(seed=args.seed)
cfg = tiny_lm_config(language, seed=args.seed)
model, run = train_tiny_lm(language, cfg, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
held_out, mixtures = language.sample(1000, cfg.n_ctx, seed=10_000 + args.seed)
with torch.no_grad():
    model_ce = model(held_out, return_type="loss").item()
notes = {
    "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
    "tokens_seen": run.tokens_seen, "seconds": round(run.seconds, 1), "torch": torch.__version__,
    "held_out_ce": round(model_ce, 4), "oracle_ce": round(language.oracle_ce(held_out, mixtures), 4),
    "unigram_ce": round(unigram_ce(held_out, language.vocab_size), 4),
}
save_tiny_lm(model, language, args.out, **notes)
print(f"saved to {args.out}: {notes}")
