"""Replication checks: every claim a chapter makes, computed, asserted, and tabulated.

``report.check(...)`` raises at once when a claim fails, so executing the chapter (nbval, the book
build, CI) fails exactly where the claim stopped being true. ``report.record(...)`` notes a result
that is reported but not asserted, for example where our run honestly differs from a paper.
Each chapter ends with ``report.show()``; ``report.save()`` writes the checks for the scorecard page.

Every check has a *kind*, so the scorecard can say how much of the papers is replicated:

* ``"replication"``: a paper's claim, with the paper's number beside ours, computed live in the
  paper's setting or a faithful analogue (the default when ``paper`` is given);
* ``"replication (shipped run)"``: the same, but read from a results file that a script shipped (a
  run too long for the chapter): the chapter re-reads it, so only a changed file can make it fail;
* ``"finding"``: a result of the book's own that the papers do not state (the default otherwise);
* ``"mechanics"``: a property that holds on any weights (shapes, an identity splice, a library class
  agreeing with the scratch version). Pass ``kind="mechanics"``.

A claim about what a *trained* model represents means nothing on random or planted weights:
:meth:`ReplicationReport.check_if` asserts it only when the weights are real and records it otherwise.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

REPORTS_ENV = "SAE_BOOK_REPORTS"
KINDS = ("replication", "replication (shipped run)", "finding", "mechanics")
SHIPPED_RUN = "replication (shipped run)"


@dataclass
class Check:
    claim: str
    paper: str
    ours: str
    status: str  # "pass", or a short word for an unasserted result such as "differs"
    kind: str = "finding"  # one of KINDS


def _kind(kind: str | None, paper: str) -> str:
    if kind is None:
        return "finding" if paper == "—" else "replication"
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind in ("replication", SHIPPED_RUN) and paper == "—":
        raise ValueError("a replication check needs the paper's number beside ours: pass paper=...")
    return kind


class ReplicationReport:
    """The replication checks of one chapter."""

    def __init__(self, chapter: str):
        self.chapter = chapter
        self.checks: list[Check] = []

    def check(self, claim: str, *, ours: str, passed: bool, paper: str = "—", kind: str | None = None) -> None:
        """Assert ``claim``: record it, and raise ``AssertionError`` naming it if ``passed`` is false."""
        kind = _kind(kind, paper)
        if not passed:
            raise AssertionError(f"[{self.chapter}] replication check failed: {claim} (ours: {ours}; paper: {paper})")
        self.checks.append(Check(claim, paper, ours, "pass", kind))

    def check_if(self, real: bool, claim: str, *, ours: str, passed: bool, paper: str = "—",
                 kind: str | None = None, otherwise: str = "not asserted (weights not trained)") -> None:
        """:meth:`check` when ``real`` (pretrained or trained weights), else :meth:`record` with status
        ``otherwise``: the one gate between claims about a model and the mechanics-only runs."""
        if real:
            self.check(claim, ours=ours, passed=passed, paper=paper, kind=kind)
        else:
            self.record(claim, ours=ours, status=otherwise, paper=paper, kind=kind)

    def record(self, claim: str, *, ours: str, status: str, paper: str = "—", kind: str | None = None) -> None:
        """Report a result without asserting it (say in the text why it is not asserted)."""
        self.checks.append(Check(claim, paper, ours, status, _kind(kind, paper)))

    def table(self) -> pd.DataFrame:
        frame = pd.DataFrame([asdict(c) for c in self.checks], columns=["claim", "paper", "ours", "status", "kind"])
        frame.index = range(1, len(frame) + 1)
        return frame

    def show(self):
        """The chapter's closing table (a pandas Styler, left-aligned for reading)."""
        return self.table().style.set_properties(**{"text-align": "left"})

    def save(self, directory: str | Path | None = None) -> Path:
        """Write the checks as JSON (to ``$SAE_BOOK_REPORTS`` or ``directory``) for the scorecard page."""
        directory = Path(directory or os.environ.get(REPORTS_ENV, "_checks"))
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.chapter}.json"
        path.write_text(json.dumps([asdict(c) for c in self.checks], indent=2))
        return path


def load_reports(directory: str | Path | None = None) -> dict[str, list[Check]]:
    """Every chapter's saved checks, keyed by chapter name (for the scorecard page)."""
    directory = Path(directory or os.environ.get(REPORTS_ENV, "_checks"))
    return {
        path.stem: [Check(**c) for c in json.loads(path.read_text())]
        for path in sorted(directory.glob("*.json"))
    }
