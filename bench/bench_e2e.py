"""How fast one end-to-end SAE training step runs on SmolLM2, by the routes EndToEnd can take.

    .venv/bin/python bench/bench_e2e.py                 # layer 24, batch 8 x 128: a few minutes on 2 cores
    .venv/bin/python bench/bench_e2e.py --layer 10 --steps 3

One step is what train_sae does with an e2e objective: the original distribution without gradients,
the spliced run with gradients into the SAE, the KL + sparsity loss, backward, an Adam step. The routes:

* **whole model**: both runs start at the tokens (``EndToEnd(..., start_at_splice=False)``);
* **from the splice**: the blocks before the splice run once, without gradients, and both runs start
  there (``EndToEnd``'s default with token rows);
* **tail only**: the rows are the residual stream at the splice, read from an activation store, so
  nothing before the splice runs (``EndToEnd`` with residual rows);
* **tail only, KL at a quarter of the positions**: as the tail only, with ``kl_positions=0.25``: the
  final norm, the unembedding and the softmax run at a quarter of the positions (drawn each step).

All routes run in this one process on the same batch, interleaved over ``--rounds``, so a slow spell of a
shared machine falls on every route alike; the table gives the median step and each route's speed as a
ratio of the whole-model route's, measured in this run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sae_lib import TopKSAE  # noqa: E402
from sae_lib.e2e import EndToEnd  # noqa: E402
from sae_lib.smollm2 import load_smollm2  # noqa: E402
from sae_lib.splicing import harvest  # noqa: E402


def one_step(objective, sae, optimizer, batch) -> None:
    optimizer.zero_grad(set_to_none=True)
    terms, _ = objective(sae, batch, torch.zeros(sae.n_latents, dtype=torch.bool))
    sum(terms.values()).backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", type=int, default=24, help="splice at blocks.LAYER.hook_resid_pre")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per route and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model, tokenizer = load_smollm2()
    hook = f"blocks.{args.layer}.hook_resid_pre"
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(100, model.cfg.d_vocab, (args.batch, args.seq_len), generator=g)
    rows = harvest(model, tokens, hook, progress=False)  # what a sequence-ordered store would hold
    routes = {"whole model": (EndToEnd(model, hook, start_at_splice=False), tokens),
              "from the splice": (EndToEnd(model, hook), tokens),
              "tail only": (EndToEnd(model, hook), rows),
              "tail only, KL at 1/4 of positions": (EndToEnd(model, hook, kl_positions=0.25), rows)}
    sae = TopKSAE(model.cfg.d_model, 8 * model.cfg.d_model, k=32, seed=0)
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-4)
    times = {name: [] for name in routes}
    for name, (objective, batch) in routes.items():  # warm-up
        one_step(objective, sae, optimizer, batch)
    for _ in range(args.rounds):
        for name, (objective, batch) in routes.items():
            for _ in range(args.steps):
                began = time.perf_counter()
                one_step(objective, sae, optimizer, batch)
                times[name].append(time.perf_counter() - began)
    n_tokens = args.batch * args.seq_len
    base = statistics.median(times["whole model"])
    print(f"SmolLM2-135M, e2e step at {hook} ({model.cfg.n_layers} blocks), batch {args.batch} x "
          f"{args.seq_len}, TopK SAE {sae.n_latents} latents; {torch.get_num_threads()} torch threads")
    print(f"| route | median step (s) | tokens/s | speed vs whole model |\n|---|---|---|---|")
    for name, values in times.items():
        step = statistics.median(values)
        print(f"| {name} | {step:.2f} | {n_tokens / step:.0f} | {base / step:.2f}x |")


if __name__ == "__main__":
    main()
