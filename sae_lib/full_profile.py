"""The full-profile results of chapters 4 and 5, run once and shipped with the library.

The papers' scale (15k steps of 200 samples, 10 seeds) needs a few hundred tree SAEs: hours on a laptop
CPU, too long for CI or for a reader's first run. ``scripts/full_profile_ch45.py`` trains them piece by
piece into :data:`RESULTS`, and the chapters show those numbers beside their own ci-scale run, so a
reader sees both scales without waiting. Each line of the file is one trained SAE (see the script).

The noisy-world lines (``ch5/noisy/``) predate the book's one held-out convention
(:func:`~sae_lib.synthetic.held_out_seed`): their FVU, L0 and dead counts were scored on the samples of
seed + 100. Rescored on the convention's samples their medians move by at most 0.004 and every claim
of chapter 5 still holds; the matched cosines do not depend on held-out samples.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .tree_recipes import result_row

RESULTS = Path(__file__).parent / "assets" / "full_profile" / "ch45.jsonl"
COMMAND = "python scripts/full_profile_ch45.py"


def read_records(path: Path = RESULTS) -> dict[str, dict]:
    """Every record of a results file, by key (the script appends one line per finished piece)."""
    if not path.exists():
        raise FileNotFoundError(f"no full-profile results at {path}; make them with `{COMMAND}`")
    records = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {record["key"]: record for record in records}


def load_full_profile(prefix: str, path: Path = RESULTS) -> pd.DataFrame:
    """The shipped runs whose key starts with ``prefix`` (``"ch4/"``, ``"ch5/sweep/"``, ...): one row
    per trained SAE in the columns of :func:`~sae_lib.tree_recipes.runs_table` (its family is ``SAE``),
    plus its key, its steps and the seconds it took on the machine that ran it."""
    rows = []
    for key, record in read_records(path).items():
        if not key.startswith(prefix) or "family" not in record:
            continue
        row = result_row(record["family"], record["seed"], record.get("data", {}), record["scores"])
        rows.append({"key": key, **row, "steps": record["steps"], "seconds": record["seconds"]})
    if not rows:
        raise ValueError(f"no full-profile runs under {prefix!r} in {path}")
    return pd.DataFrame(rows)


def full_profile_setting(key: str, path: Path = RESULTS) -> dict:
    """One record of the run by its key, such as ``"ch4/tune_l1"`` (the bisected L1 weight)."""
    records = read_records(path)
    if key not in records:
        raise KeyError(f"{key!r} is not in {path}")
    return records[key]
