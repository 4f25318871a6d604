"""An activation store: a model's activations at one hook, harvested once to disk and read many times.

Harvesting is what real-scale SAE training costs on a CPU (the model must run up to the hook for every
token; an SAE step on stored activations is ten times cheaper). So the activations are computed once,
written as float16 rows to one memory-mapped file, and every SAE trains on that file.

* **Resumable.** Sequences are harvested in chunks; ``progress.json`` records how many are done and is
  replaced atomically after each chunk's rows are flushed, so an interrupted harvest continues where it
  stopped and never writes a row twice.
* **Attention sinks are excluded by a stated rule.** Most pretrained LMs park a few tokens with huge
  residual norms (the first position of every sequence, and some later ones: a sink can appear
  mid-text). A token is dropped when its norm exceeds :data:`SINK_FACTOR` times the median token norm
  of its chunk; how many were dropped, and how many of those sat at position 0, is recorded.
* **Shuffled across sequences at read time.** Rows are stored in harvest order; :meth:`ActivationStore.rows`
  hands them out whole, and the trainer draws batches by a random permutation of all rows, so a batch
  mixes tokens from many sequences.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .splicing import check_hook, check_tokens, harvest
from .util import positive_int, progress_bar, real_number

SINK_FACTOR = 10.0
ROWS, PROGRESS = "rows.f16", "progress.json"


@dataclass
class HarvestReport:
    sequences: int
    tokens_seen: int
    rows_kept: int
    sinks_dropped: int
    sinks_at_position_0: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_seen / self.seconds if self.seconds else float("nan")


class ActivationStore:
    """The rows harvested at one hook, in ``folder``: ``rows.f16`` (N × d float16) and ``progress.json``."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / PROGRESS
        if not path.is_file():
            raise FileNotFoundError(f"{self.folder} holds no activation store (no {PROGRESS}); harvest one first")
        self.info = json.loads(path.read_text())
        if not self.info.get("complete"):
            raise RuntimeError(f"the store in {self.folder} is incomplete ({self.info['sequences_done']} of "
                               f"{self.info['sequences']} sequences); run the harvest again to finish it")

    @property
    def n_rows(self) -> int:
        return int(self.info["rows"])

    @property
    def d(self) -> int:
        return int(self.info["d"])

    def rows(self) -> Tensor:
        """All rows as a float16 (N, d) tensor backed by the file (nothing is read until it is used)."""
        path = self.folder / ROWS
        expected = self.n_rows * self.d * 2
        if not path.is_file() or path.stat().st_size != expected:
            size = path.stat().st_size if path.is_file() else 0
            raise RuntimeError(f"{path} holds {size:,d} bytes, not the {expected:,d} that {PROGRESS} records; "
                               "delete the folder and harvest again")
        # Copy-on-write: the file is never changed, and torch gets the writable array it expects.
        return torch.from_numpy(np.memmap(path, dtype=np.float16, mode="c", shape=(self.n_rows, self.d)))

    def __repr__(self) -> str:
        return f"ActivationStore({self.folder}, rows={self.n_rows:,d}, d={self.d}, hook={self.info['hook']!r})"


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)  # atomic: a reader sees the old file or the new one, never half of one


def sink_mask(norms: Tensor, factor: float = SINK_FACTOR) -> Tensor:
    """True where a token's norm exceeds ``factor`` times the median norm: an attention sink."""
    return norms > factor * norms.median()


@torch.no_grad()
def harvest_to_store(model, tokens: Tensor, hook: str, folder: str | Path, *, batch_size: int = 8,
                     chunk_sequences: int = 64, sink_factor: float = SINK_FACTOR,
                     progress: bool = True) -> HarvestReport:
    """Harvest ``hook`` for every row of ``tokens`` into the store at ``folder``, resuming if it is partly done.

    A rerun with the same tokens continues after the last finished chunk; with different tokens, hook
    or sizes it refuses (delete the folder to start over). Returns what this call did.
    """
    check_hook(model, hook)
    tokens = check_tokens(model, tokens)
    batch_size, chunk_sequences = positive_int("batch_size", batch_size), positive_int("chunk_sequences", chunk_sequences)
    sink_factor = real_number("sink_factor", sink_factor, low=1)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    d = model.cfg.d_model
    fingerprint = {"hook": hook, "model": model.cfg.model_name, "sequences": len(tokens), "seq_len": tokens.shape[1],
                   "d": d, "sink_factor": sink_factor, "tokens_sum": int(tokens.sum())}
    path = folder / PROGRESS
    state = json.loads(path.read_text()) if path.is_file() else {
        **fingerprint, "sequences_done": 0, "rows": 0, "sinks_dropped": 0, "sinks_at_position_0": 0,
        "seconds": 0.0, "complete": False}
    if any(state.get(k) != v for k, v in fingerprint.items()):
        raise ValueError(f"{folder} holds a store of other tokens or settings; delete it to harvest anew")
    report = HarvestReport(0, 0, 0, 0, 0, 0.0)
    rows_file = folder / ROWS
    with open(rows_file, "ab") as out:
        out.truncate(state["rows"] * d * 2)  # drop rows of a chunk that was written but not recorded
        starts = range(state["sequences_done"], len(tokens), chunk_sequences)
        for start in progress_bar(starts, desc=f"harvesting {hook}", show=progress):
            began = time.perf_counter()
            chunk = tokens[start : start + chunk_sequences]
            acts = harvest(model, chunk, hook, batch_size=batch_size, progress=False)  # (n, pos, d)
            sinks = sink_mask(acts.norm(dim=-1), sink_factor)
            kept = acts[~sinks].half().numpy()
            out.write(kept.tobytes())
            out.flush()
            os.fsync(out.fileno())
            done = {"sequences": len(chunk), "tokens_seen": chunk.numel(), "rows_kept": len(kept),
                    "sinks_dropped": int(sinks.sum()), "sinks_at_position_0": int(sinks[:, 0].sum()),
                    "seconds": time.perf_counter() - began}
            for key, value in done.items():
                setattr(report, key, getattr(report, key) + value)
            state["rows"] += done["rows_kept"]
            state["sinks_dropped"] += done["sinks_dropped"]
            state["sinks_at_position_0"] += done["sinks_at_position_0"]
            state["seconds"] += done["seconds"]
            state["sequences_done"] = start + len(chunk)
            state["complete"] = state["sequences_done"] == len(tokens)
            _write_json(path, state)
    return report
