"""Chapter 7 on a real model: end-to-end SAEs on SmolLM2, beside the real-scale study's local ones.

    python scripts/e2e_study.py              # run (or continue) the study
    python scripts/e2e_study.py --list       # what is done and what is left
    python scripts/e2e_study.py --workers 2  # two SAEs at once, one thread each

Same model, hook, text and held-out scores as ``scripts/real_scale_study.py`` (whose pieces this reuses),
so that its local ReLU SAEs (relu-l0-16, relu-l0-32) are the local frontier here. The SAEs, all ReLU
(the e2e paper's family), 4,608 latents:

* ``e2e-l0-K``: trained from scratch on the KL objective (Braun et al.'s SAE_e2e), its L1 weight steered
  to L0 = K by ``TargetL0``, the rule that found the local SAEs' weights;
* ``e2e+ds-l0-K``: the same with the downstream term (½·KL + β/n·Σ MSE at the later residual streams);
* ``kl-ft-relu-l0-K``, ``kl-ft-hold-relu-l0-K``: Karvonen's fine-tune. The local SAE relu-l0-K trained
  a little longer on KL + MSE/Var(a), its L1 weight steered to hold L0 = K.

λ is steered on the training batches for every step, except in the first three SAEs trained
(``DRIFTED``: the first 70% of the steps, as in the local study); their held-out L0 drifted far up
once the steering stopped. kl-ft-hold is kl-ft with the steering to the end. The SAEs trained from
scratch before ``real_scale.E2E_STEERING_FROM`` were steered fast (``rate=0.2``), which oscillates
(``bench/steer_l0.py``): e2e-l0-24 ended at L0 14. Those after it use the damped rule
(``DAMPED_STEERING``). Each record keeps its rule and the L0 of its training batches (``train_l0_by_tenth``).

An e2e step runs the model from the splice on, twice (once with gradients), so it costs about twenty
times a local step per token: the budgets are small beside the paper's, and each record says its own.
The model's blocks before the splice run once per batch without gradients (``EndToEnd``'s default with
token rows), so the study needs no activation store of its training text; it scores on the real-scale
study's held-out stores, which it harvests first if they are missing (a few minutes).

Resumable and atomic, like the real-scale study: a finished SAE is one line of
``sae_lib/assets/real_scale/e2e_results.jsonl``; an SAE interrupted mid-training is trained again.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import real_scale_study as study  # noqa: E402

from sae_lib import corpus, real_scale  # noqa: E402
from sae_lib.real_scale import E2E_SHIPPED, HOOK, N_LATENTS, SEQ_LEN  # noqa: E402
from sae_lib.smollm2 import MODEL_NAME  # noqa: E402
from sae_lib.training import DAMPED_STEERING, FAST_STEERING  # noqa: E402

RESULTS = study.ASSETS / "e2e_results.jsonl"
BATCH_SEQUENCES = 2  # 512 tokens a step: more steps for the same tokens
E2E_TOKENS = 131_072  # 256 steps: the budget two CPU cores allow (the paper: 400k samples of 1,024)
FINETUNE_TOKENS = 104_448  # 204 steps, 5% of the local SAEs' 2,097,152 (Karvonen: the last few percent)
LR = 3e-3  # the local SAEs' learning rate
FINETUNE_LR = real_scale.E2E_FINETUNE_LR  # a tenth: the fine-tune starts from a trained SAE
MSE_COEFF = 1.0  # Karvonen's KL + MSE, the MSE as a fraction of variance (about the KL's size here)
DRIFTED = ("kl-ft-relu-l0-32", "e2e-l0-32", "e2e+ds-l0-32")  # trained with λ steered for 70% of the steps
DS_COEFF = 2.5  # the paper's β at a splice early in the model (GPT-2 layers 2 and 6)


def pieces() -> list[dict]:
    """The plan (``real_scale.E2E_PLAN``): one point of each kind at L0 = 32, then 16, then between."""
    return [{"name": real_scale.e2e_name(kind, k), "kind": kind, "k": k,
             "started_from": f"relu-l0-{k}" if kind.startswith("kl-ft") else None}
            for kind, k in real_scale.E2E_PLAN]


def done_names() -> set[str]:
    return study.done_names(RESULTS)


def objective_for(piece: dict, model, tokens, sae, steps: int):
    from sae_lib.e2e import EndToEnd, kl_finetune
    from sae_lib.splicing import harvest
    from sae_lib.training import TargetL0

    adapt = int(0.7 * steps) if piece["name"] in DRIFTED else steps  # see the module's docstring
    if piece["started_from"]:  # a fine-tune: from the local SAE's own λ, only held at its L0
        local = {r["name"]: r for r in real_scale.load_results()}[piece["started_from"]]
        sample = harvest(model, tokens[:8], HOOK, progress=False)
        return kl_finetune(model, HOOK, sae, local_l1=local["l1_coeff_found"], sample=sample,
                           target_l0=piece["k"], adapt_steps=adapt, mse_coeff=MSE_COEFF)
    if piece["kind"] == "e2e":
        inner = EndToEnd(model, HOOK)
    else:
        inner = EndToEnd(model, HOOK, kl_coeff=0.5, downstream_coeff=DS_COEFF)
    # From scratch, λ starts from the objective's own gradient (a guess within a factor of ten).
    return TargetL0(piece["k"], adapt_steps=adapt, inner=inner, **steering(piece))


def steering(piece: dict) -> dict:
    """The steering rule of a piece trained from scratch (see the module's docstring)."""
    late = [real_scale.e2e_name(*p) for p in real_scale.E2E_PLAN[real_scale.E2E_STEERING_FROM:]]
    return DAMPED_STEERING if piece["name"] in late else FAST_STEERING


def local_path(name: str) -> Path | None:
    """Where a local SAE of the real-scale study is: shipped, or else its scratch checkpoint (fp32,
    on the machine that trained it); None if neither."""
    if name in real_scale.shipped_names():
        return real_scale.assets_dir() / "saes" / name
    scratch = study.scratch() / "saes" / name
    return scratch if scratch.is_dir() else None


def local_sae(name: str):
    from sae_lib import load_sae

    path = local_path(name)
    if path is None:
        raise FileNotFoundError(f"the local SAE {name} is neither shipped nor in {study.scratch() / 'saes'}: "
                                f"train it with `python scripts/real_scale_study.py --only {name}`")
    return real_scale.load_shipped(name) if name in real_scale.shipped_names() else load_sae(path)


def start_sae(piece: dict, d_model: int):
    """A fresh ReLU SAE, or (the fine-tune) the local SAE it starts from."""
    from sae_lib import ReLUSAE

    sae = ReLUSAE(d_model, N_LATENTS, l1_coeff=0.03, seed=0)
    if piece["started_from"]:
        sae.load_state_dict(local_sae(piece["started_from"]).state_dict())
    return sae


def geometry(sae, local) -> dict:
    """The paper's geometry: each atom's largest cosine to another atom of its own dictionary, and to the
    local dictionary's atoms (median over atoms)."""
    from sae_lib.metrics import max_cosine_across, max_cosine_within

    return {"max_cos_own_median": max_cosine_within(sae.atoms()).median().item(),
            "max_cos_to_local_median": max_cosine_across(sae.atoms(), local.atoms()).median().item()}


def tenths(values: list[float]) -> list[float]:
    """The mean of each tenth of a per-step series (the training batches' L0)."""
    n = len(values)
    chunks = [values[i * n // 10:(i + 1) * n // 10] for i in range(10)]
    return [round(sum(chunk) / max(1, len(chunk)), 2) for chunk in chunks]


def train_piece(piece: dict, model, tokens, scorer) -> None:
    from sae_lib import save_sae, train_sae

    finetune = piece["started_from"] is not None
    budget = FINETUNE_TOKENS if finetune else E2E_TOKENS
    steps = budget // (BATCH_SEQUENCES * SEQ_LEN)
    lr = FINETUNE_LR if finetune else LR
    while True:
        sae = start_sae(piece, model.cfg.d_model)
        objective = objective_for(piece, model, tokens, sae, steps)
        before = scorer.score(sae) if finetune else None
        try:
            history = train_sae(sae, tokens, steps=steps, batch_size=BATCH_SEQUENCES, lr=lr, seed=0,
                                objective=objective, init_b_dec=not finetune, desc=piece["name"])
            break
        except FloatingPointError as error:  # the same rule as the local study: a third of the rate
            study.log(f"  {piece['name']} diverged at lr {lr:g} ({str(error)[:80]}...); retrying at {lr / 3:g}")
            lr /= 3
    began = time.perf_counter()
    scores = scorer.score(sae)
    reference = "relu-l0-32"  # a shipped local SAE: the same reference for every SAE, on every machine
    record = {
        "name": piece["name"], "kind": piece["kind"], "family": "relu", "target_l0": piece["k"],
        "n_latents": N_LATENTS, "d_in": sae.d_in, "hook": HOOK, "model": MODEL_NAME, "config": sae.config(),
        "train_tokens": steps * BATCH_SEQUENCES * SEQ_LEN, "steps": steps, "batch_sequences": BATCH_SEQUENCES,
        "seq_len": SEQ_LEN, "lr": lr, "schedule": "wsd", "l1_coeff_found": objective.history[-1],
        "l1_steered_steps": objective.adapt_steps,
        "steering": {"rate": objective.rate, "smoothing": objective.smoothing, "gain": objective.gain},
        "train_l0_by_tenth": tenths(objective.l0_history),
        "objective_terms": {k: round(v[-1], 5) for k, v in history.terms.items()},
        "downstream_coeff": DS_COEFF if piece["kind"] == "e2e+ds" else 0.0,
        "mse_coeff": MSE_COEFF if finetune else 0.0,
        "started_from": piece["started_from"],
        "train_seconds": round(history.seconds, 1), "score_seconds": round(time.perf_counter() - began, 1),
        "tokens_per_second": round(steps * BATCH_SEQUENCES * SEQ_LEN / history.seconds, 1),
        "machine": study.machine(), "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "geometry_reference": reference, **geometry(sae, local_sae(reference)), **scores,
    }
    if before is not None:
        record["before"] = {k: before[k] for k in ("fvu", "l0", "ce_increase", "ce_recovered", "alive",
                                                   "ce_per_sequence")}
    save_sae(sae, study.scratch() / "saes" / piece["name"])
    if piece["name"] in E2E_SHIPPED:
        study.export(sae, piece["name"], made_by="scripts/e2e_study.py")
    study.append_result(record, RESULTS)
    study.log(f"  {piece['name']}: L0 {scores['l0']:.1f}  FVU {scores['fvu']:.3f}  CE +{scores['ce_increase']:.3f} "
              f"(recovered {scores['ce_recovered']:.3f})  alive {scores['alive']}  in {history.seconds:.0f} s "
              f"({record['tokens_per_second']:.0f} tokens/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="say what is done and what is left, then stop")
    parser.add_argument("--only", nargs="*", help="run only these SAEs (by name)")
    parser.add_argument("--workers", type=int, default=1, help="train this many SAEs at once, one thread each")
    args = parser.parse_args()
    if args.list:
        done = done_names()
        for piece in pieces():
            print(f"{'done' if piece['name'] in done else 'todo':5s} {piece['name']}")
        return
    start = time.perf_counter()
    study.log(f"e2e study on {platform.node()} ({os.cpu_count()} CPUs, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads)")
    model, tokenizer = study.load_model()
    study.harvest_pieces(model, tokenizer, held_out_only=True)
    if args.workers > 1:
        study.run_workers(__file__, args.workers, args.only)
        return
    n_sequences = math.ceil(max(E2E_TOKENS, FINETUNE_TOKENS) / SEQ_LEN)
    tokens = corpus.corpus_sequences(tokenizer, "train", SEQ_LEN, max_sequences=n_sequences)
    scorer = study.Scorer(model, tokenizer)
    todo = [p for p in pieces() if p["name"] not in done_names() and (not args.only or p["name"] in args.only)]
    for piece in todo:
        if piece["started_from"] and local_path(piece["started_from"]) is None:
            study.log(f"skipping {piece['name']}: it fine-tunes {piece['started_from']}, which is not shipped and "
                      f"not in this machine's scratch (`python scripts/real_scale_study.py --only "
                      f"{piece['started_from']}` makes it)")
            continue
        if piece["name"] in done_names() or not study.claim(piece["name"]):
            continue
        study.log(f"training {piece['name']} on {len(tokens)} sequences of {SEQ_LEN} tokens")
        train_piece(piece, model, tokens, scorer)
    study.log(f"e2e study done for now ({len(done_names())} of {len(pieces())} SAEs) in "
              f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
