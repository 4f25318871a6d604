"""How fast sae_lib trains, beside SAELens and overcomplete when they are installed.

One *training step* (zero the gradients, forward pass and loss, backward pass, ``torch.optim.Adam`` step)
is timed for every SAE family (ReLU, TopK, MP, BatchTopK, Matryoshka) at a few shapes, with the peak memory of live tensors
during one step. Every measurement runs in a fresh subprocess, so imports, allocator state and memory
figures never mix. Ratios compare each row, measured in the same run on the same machine, with the
fastest peer library of its family and with a floor:

* ReLU, TopK, BatchTopK and Matryoshka (no peers timed for the last two yet): the five dense matrix products any dense SAE of that shape computes in a step
  (encode, decode, and their three gradients), timed bare, without allocation or anything else;
* MP: the ``k`` dense correlation products ``r @ atomsᵀ`` a plain matching pursuit computes
  (a reference for what the Gram-matrix route saves, not a floor: sae_lib beats it).

Rows named ``sae_lib train_sae`` time ``sae_lib.train_sae`` itself, which adds gradient clipping,
renormalisation, dead-latent tracking and the history to the step; ``--baseline PATH`` adds rows for
another checkout of sae_lib (for before/after tables). Peers are optional and never in requirements.txt:
the benchmark looks for them in its own interpreter or in ``--peers-python`` (see bench/README.md).

    python bench/bench_saes.py                        # small and medium shapes, every family
    python bench/bench_saes.py --shapes tiny --families mp --peers-python /tmp/peers-venv/bin/python
    python bench/bench_saes.py --shapes medium smollm2    # the shape of the real-scale study too
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAPES = {  # d: input size, n: latents, k: active latents (TopK, MP), batch: rows per step
    "tiny": dict(d=32, n=128, k=4, batch=512),  # the toy SAEs of chapters 2-3
    "small": dict(d=64, n=512, k=8, batch=1024),
    "medium": dict(d=256, n=2048, k=16, batch=1024),
    "smollm2": dict(d=576, n=4608, k=32, batch=4096),  # Part III's real-scale SAEs (SmolLM2, expansion 8)
}
FAMILIES = ("relu", "relu-sparse", "topk", "mp", "batchtopk", "matryoshka")
L1_COEFF = 1e-3
LR = 1e-3
RESULT = "RESULT_JSON:"

# name -> (family, kind); kind: "ours", "trainer", "peer" or "floor" (a floor row can serve several families)
IMPLEMENTATIONS = {
    "sae_lib ReLUSAE": ("relu", "ours"),
    "sae_lib ReLUSAE, L0 ≈ k": ("relu-sparse", "ours"),
    "sae_lib TopKSAE": ("topk", "ours"),
    "sae_lib MPSAE": ("mp", "ours"),
    "sae_lib BatchTopKSAE": ("batchtopk", "ours"),
    "sae_lib MatryoshkaSAE": ("matryoshka", "ours"),
    "sae_lib train_sae ReLU": ("relu", "trainer"),
    "sae_lib train_sae ReLU, L0 ≈ k": ("relu-sparse", "trainer"),
    "sae_lib train_sae TopK": ("topk", "trainer"),
    "sae_lib train_sae MP": ("mp", "trainer"),
    "sae_lib train_sae BatchTopK": ("batchtopk", "trainer"),
    "sae_lib train_sae Matryoshka": ("matryoshka", "trainer"),
    "SAELens standard": ("relu", "peer"),
    "SAELens topk": ("topk", "peer"),
    "SAELens matching_pursuit": ("mp", "peer"),
    "overcomplete SAE": ("relu", "peer"),
    "overcomplete TopKSAE": ("topk", "peer"),
    "overcomplete MpSAE": ("mp", "peer"),
    "floor: 5 dense GEMMs": ("relu,relu-sparse,topk,batchtopk,matryoshka", "floor"),
    "reference: k correlation GEMMs": ("mp", "floor"),
}
PEER_MODULE = {"SAELens": "sae_lens", "overcomplete": "overcomplete"}


# ---------------------------------------------------------------------------------------------- builders
# Each returns (parameters, loss(x) -> scalar tensor) for an SAE of the shape, or a bare step function.


def make_ours(family, s, device, data=None):
    """sae_lib's SAE of ``family`` at shape ``s``. ``relu-sparse``: a ReLU SAE whose encoder biases make each
    latent fire on ``k / n`` of ``data`` (as ``TargetL0`` starts one), so that its codes are as sparse as a
    trained SAE's; a plain ReLU SAE at initialisation fires on about half of its latents."""
    from sae_lib import MPSAE, BatchTopKSAE, MatryoshkaSAE, ReLUSAE, TopKSAE

    sae = {"relu": lambda: ReLUSAE(s["d"], s["n"], l1_coeff=L1_COEFF, seed=0),
            "topk": lambda: TopKSAE(s["d"], s["n"], s["k"], seed=0),
            "mp": lambda: MPSAE(s["d"], s["n"], s["k"], seed=0),
            "batchtopk": lambda: BatchTopKSAE(s["d"], s["n"], s["k"], seed=0),
            "matryoshka": lambda: MatryoshkaSAE(s["d"], s["n"], s["k"], seed=0)}[family.removesuffix("-sparse")]()
    if family == "relu-sparse":
        import torch

        with torch.no_grad():
            sae.b_enc.sub_(sae.pre_activations(data[:2048].cpu()).quantile(1 - s["k"] / s["n"], dim=0))
    return sae.to(device)


def build_ours(family, s, device, data=None):
    from sae_lib.training import Reconstruction

    sae = make_ours(family, s, device, data)
    objective = Reconstruction()  # MSE plus the family's own terms (L1 for ReLU; AuxK once latents die)
    import torch

    no_dead = torch.zeros(s["n"], dtype=torch.bool, device=device)
    return list(sae.parameters()), lambda x: sum(objective(sae, x, no_dead)[0].values())


def build_saelens(name, s, device):
    from sae_lens.saes import (MatchingPursuitTrainingSAE, MatchingPursuitTrainingSAEConfig, StandardTrainingSAE,
                               StandardTrainingSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig)
    from sae_lens.saes.sae import TrainStepInput
    import torch

    coefficients = {}
    if name.endswith("standard"):
        sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=s["d"], d_sae=s["n"], l1_coefficient=L1_COEFF,
                                                            device=device))
        coefficients = {"l1": L1_COEFF}
    elif name.endswith("topk"):
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=s["d"], d_sae=s["n"], k=s["k"], device=device))
    else:  # a fixed k steps, as in sae_lib: both early stops off
        sae = MatchingPursuitTrainingSAE(MatchingPursuitTrainingSAEConfig(
            d_in=s["d"], d_sae=s["n"], max_iterations=s["k"], residual_threshold=0.0,
            stop_on_duplicate_support=False, decoder_init_norm=1.0, device=device))
    sae.train()
    no_dead = torch.zeros(s["n"], dtype=torch.bool, device=device)

    def loss(x):
        step = TrainStepInput(sae_in=x, coefficients=coefficients, dead_neuron_mask=no_dead, n_training_steps=0,
                              is_logging_step=False)
        return sae.training_forward_pass(step).loss

    return list(sae.parameters()), loss


def build_overcomplete(name, s, device):
    from overcomplete.sae import SAE, MpSAE, TopKSAE

    if name.endswith("MpSAE"):
        sae = MpSAE(s["d"], s["n"], k=s["k"], device=device)
    elif name.endswith("TopKSAE"):
        sae = TopKSAE(s["d"], s["n"], top_k=s["k"], device=device)
    else:
        sae = SAE(s["d"], s["n"], device=device)
    sae.train()
    l1 = L1_COEFF if name.endswith(" SAE") else 0.0  # overcomplete has no built-in loss: MSE (+ L1 for ReLU)

    def loss(x):
        _, z, x_hat = sae(x)
        return (x - x_hat).square().mean() + l1 * z.abs().sum(-1).mean()

    return list(sae.parameters()), loss


def build_floor(name, s, device):
    """The bare matrix products, into preallocated outputs."""
    import torch

    g = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=g).to(device)  # noqa: E731
    x, d_out = rand(s["batch"], s["d"]), rand(s["batch"], s["d"])
    if name.startswith("floor"):
        W_enc, W_dec = rand(s["d"], s["n"]), rand(s["n"], s["d"])
        z, d_z = torch.empty(s["batch"], s["n"], device=device), torch.empty(s["batch"], s["n"], device=device)
        x_hat = torch.empty(s["batch"], s["d"], device=device)
        g_enc, g_dec = torch.empty(s["d"], s["n"], device=device), torch.empty(s["n"], s["d"], device=device)

        def step():
            torch.mm(x, W_enc, out=z)  # encode
            torch.mm(z, W_dec, out=x_hat)  # decode
            torch.mm(d_out, W_dec.T, out=d_z)  # gradient of the codes
            torch.mm(z.T, d_out, out=g_dec)  # gradient of the decoder
            torch.mm(x.T, d_z, out=g_enc)  # gradient of the encoder

        return step
    atoms = torch.nn.functional.normalize(rand(s["n"], s["d"]), dim=1)
    correlations = torch.empty(s["batch"], s["n"], device=device)

    def step():
        r = x.clone()
        for _ in range(s["k"]):
            torch.mm(r, atoms.T, out=correlations)
            best, j = correlations.max(-1)
            r.addcmul_(atoms[j], best.unsqueeze(-1), value=-1)

    return step


# ---------------------------------------------------------------------------------------------- worker
def synchronize(device):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_steps(step, device, warmup, repeats, min_seconds):
    """Per-step seconds: ``warmup`` untimed steps, then at least ``repeats`` steps and ``min_seconds``."""
    for _ in range(warmup):
        step()
    times, start = [], time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def live_tensor_peak_mb(step, device):
    """Peak of live tensor memory during one step, above its level when the step starts.

    CPU: from torch.profiler's memory timeline (independent of the allocator's caching). CUDA: from the
    caching allocator's peak counter."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    import warnings

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the timeline export is marked deprecated; it is the CPU tool there is
        path = os.path.join(tmp, "timeline.json")
        prof.export_memory_timeline(path, device="cpu")
        _, sizes = json.loads(Path(path).read_text())
    totals = [sum(row) for row in sizes]
    return (max(totals) - totals[0]) / 2**20


def worker(spec: dict) -> dict:
    import torch

    if spec.get("sae_lib_path"):
        sys.path.insert(0, spec["sae_lib_path"])
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    name, s, device = spec["impl"], SHAPES[spec["shape"]], spec["device"]
    family, kind = IMPLEMENTATIONS[name]
    data = torch.load(spec["data"]).to(device)
    batches = [data[i : i + s["batch"]] for i in range(0, len(data) - s["batch"] + 1, s["batch"])]
    held_out, batches = batches[-1], batches[:-1]
    out = {"torch": torch.__version__, "threads": torch.get_num_threads()}

    if kind == "trainer":
        from sae_lib import train_sae

        sae = make_ours(family, s, device, data)
        train_sae(sae, data, steps=spec["warmup"], batch_size=s["batch"], lr=LR, progress=False)
        steps = max(spec["repeats"], 20)
        while True:  # enough steps for min_seconds
            history = train_sae(sae, data, steps=steps, batch_size=s["batch"], lr=LR, progress=False)
            if history.seconds >= spec["min_seconds"]:
                break
            steps = int(steps * 1.5 * spec["min_seconds"] / max(history.seconds, 1e-3)) + 1
        out.update(median_ms=1e3 * history.seconds / steps, min_ms=None, steps_timed=steps)
        return out

    if kind == "floor":
        step = build_floor(name, s, device)
    else:
        builder = {"ours": build_ours, "peer": build_saelens if name.startswith("SAELens") else build_overcomplete}[kind]
        params, loss = (builder(family, s, device, data) if kind == "ours" else builder(name, s, device))
        optimizer = torch.optim.Adam(params, lr=LR)
        cursor = [0]

        def step():
            x = batches[cursor[0] % len(batches)]
            cursor[0] += 1
            optimizer.zero_grad(set_to_none=True)
            loss(x).backward()
            optimizer.step()

        with torch.no_grad():
            out["held_out_loss_start"] = float(loss(held_out))
    times = timed_steps(step, device, spec["warmup"], spec["repeats"], spec["min_seconds"])
    out.update(median_ms=1e3 * statistics.median(times), min_ms=1e3 * min(times), steps_timed=len(times))
    if kind != "floor":
        with torch.no_grad():
            out["held_out_loss_end"] = float(loss(held_out))
        optimizer.zero_grad(set_to_none=True)
    if spec["memory"]:
        out["peak_mb"] = live_tensor_peak_mb(step, device)
    return out


# ---------------------------------------------------------------------------------------------- driver
def can_import(python: str, module: str) -> bool:
    probe = subprocess.run([python, "-c", f"import {module}"], capture_output=True)
    return probe.returncode == 0


def make_data(shape: dict, seed: int = 0):
    """k-sparse non-negative mixtures of n unit atoms plus 1% noise: data an SAE of the shape can learn."""
    import torch

    g = torch.Generator().manual_seed(seed)
    atoms = torch.nn.functional.normalize(torch.randn(shape["n"], shape["d"], generator=g), dim=1)
    rows = 21 * shape["batch"]
    chosen = torch.randint(0, shape["n"], (rows, shape["k"]), generator=g)
    amounts = 0.5 + 1.5 * torch.rand(rows, shape["k"], generator=g)
    x = torch.nn.functional.embedding_bag(chosen, atoms, per_sample_weights=amounts, mode="sum")
    return x + 0.01 * torch.randn(x.shape, generator=g)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["small", "medium"], choices=list(SHAPES))
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--peers-python", help="interpreter with sae-lens and/or overcomplete (default: this one)")
    parser.add_argument("--no-peers", action="store_true", help="skip SAELens and overcomplete even if installed")
    parser.add_argument("--baseline", metavar="PATH", help="a checkout of another sae_lib version: adds its rows")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20, help="timed steps, at least (and --min-seconds)")
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3, help="run every job this many times in turn; report the median")
    parser.add_argument("--json", help="write every measurement to this file")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown too")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(RESULT + json.dumps(worker(json.loads(args.worker))), flush=True)
        return

    import torch

    peers_python = args.peers_python or sys.executable
    available = {lib: not args.no_peers and can_import(peers_python, module) for lib, module in PEER_MODULE.items()}
    jobs = []  # (label, implementation, interpreter, sae_lib path)
    for name, (families, kind) in IMPLEMENTATIONS.items():
        if not set(families.split(",")) & set(args.families):
            continue
        if kind == "peer":
            if available[name.split()[0]]:
                jobs.append((name, name, peers_python, None))
        else:
            jobs.append((name, name, sys.executable, str(REPO)))
            if kind in ("ours", "trainer") and args.baseline:
                jobs.append((name.replace("sae_lib", "baseline sae_lib"), name, sys.executable, args.baseline))
    machine = (f"{cpu_model()}, {os.cpu_count()} cores, {args.threads} threads" if args.device == "cpu"
               else torch.cuda.get_device_name(0))
    print(f"machine: {machine}; torch {torch.__version__}; peers: "
          + ", ".join(f"{lib} {'yes' if ok else 'not installed'}" for lib, ok in available.items()), flush=True)

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes:
            data_path = os.path.join(tmp, f"{shape}.pt")
            torch.save(make_data(SHAPES[shape]), data_path)
            rows = {}
            # Rounds run every job once in turn, so a slow spell of a shared machine hits all of them alike.
            for round_ in range(args.rounds):
                for label, name, python, path in jobs:
                    family, kind = IMPLEMENTATIONS[name]
                    row = rows.setdefault(label, dict(label=label, family=family, kind=kind, shape=shape, rounds_ms=[]))
                    if "error" in row:
                        continue
                    spec = dict(impl=name, shape=shape, data=data_path, device=args.device, threads=args.threads,
                                warmup=args.warmup, repeats=args.repeats, min_seconds=args.min_seconds,
                                sae_lib_path=path, memory=round_ == 0)
                    env = {**os.environ, "TQDM_DISABLE": "1"}
                    run = subprocess.run([python, __file__, "--worker", json.dumps(spec)], capture_output=True,
                                         text=True, env=env, cwd=REPO)
                    lines = [line for line in run.stdout.splitlines() if line.startswith(RESULT)]
                    if run.returncode or not lines:
                        row["error"] = (run.stderr or run.stdout).strip().splitlines()[-1:] or ["no output"]
                        print(f"  {shape:6s} {label:34s} ERROR {row['error']}", flush=True)
                        continue
                    measured = json.loads(lines[-1][len(RESULT):])
                    row["rounds_ms"].append(measured.pop("median_ms"))
                    row.update(measured)
                    print(f"  {shape:6s} round {round_ + 1} {label:34s} {row['rounds_ms'][-1]:9.2f} ms/step",
                          flush=True)
            for row in rows.values():
                if row["rounds_ms"] and "error" not in row:
                    row["median_ms"] = statistics.median(row["rounds_ms"])
                results.append(row)

    for row in results:  # ratios within the same shape and family
        same = [r for r in results if r["shape"] == row["shape"] and "median_ms" in r
                and set(r["family"].split(",")) & set(row["family"].split(","))]
        peers = [r["median_ms"] for r in same if r["kind"] == "peer"]
        floors = [r["median_ms"] for r in same if r["kind"] == "floor"]
        if "median_ms" in row and row["kind"] != "floor":
            row["x_fastest_peer"] = row["median_ms"] / min(peers) if peers else None
            row["x_floor"] = row["median_ms"] / floors[0] if floors else None
        if "median_ms" in row:
            row["steps_per_s"] = 1e3 / row["median_ms"]

    header = ("shape", "family", "implementation", "ms/step", "steps/s", "peak MB", "x fastest peer", "x floor")
    order = {"ours": 0, "trainer": 1, "peer": 2, "floor": 3}
    rows = sorted((r for r in results if "median_ms" in r),
                  key=lambda r: (args.shapes.index(r["shape"]), r["family"] if r["kind"] != "floor" else r["family"][-4:],
                                 order[r["kind"]], r["label"].startswith("baseline")))
    table = [(r["shape"], r["family"], r["label"], fmt(r.get("median_ms")), fmt(r.get("steps_per_s"), 1),
              fmt(r.get("peak_mb"), 1), fmt(r.get("x_fastest_peer")), fmt(r.get("x_floor"))) for r in rows]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *table)]
    print()
    for line in (header, tuple("-" * w for w in widths), *table):
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths)))
    print(f"\nmachine: {machine}; torch {torch.__version__}; {time.strftime('%Y-%m-%d')}")
    print(f"ms/step: median over {args.rounds} rounds of the median over the timed steps; peak MB: live tensors during one step above its start "
          "(CPU: torch.profiler memory timeline); x floor: ReLU/TopK vs 5 bare dense GEMMs, MP vs k bare "
          "correlation GEMMs; sae_lib train_sae rows: mean ms/step of the whole training loop.")
    if args.markdown:
        print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        for line in table:
            print("| " + " | ".join(line) + " |")
    if args.json:
        meta = dict(machine=machine, torch=torch.__version__, date=time.strftime("%Y-%m-%d"), args=vars(args))
        Path(args.json).write_text(json.dumps(dict(meta=meta, shapes=SHAPES, results=results), indent=1))


if __name__ == "__main__":
    main()
