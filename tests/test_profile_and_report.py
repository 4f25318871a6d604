import json

import pytest

from sae_lib import by_profile, current_profile
from sae_lib.report import ReplicationReport


def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv("SAE_BOOK_PROFILE", "full")
    assert current_profile() == "full" and by_profile(ci=1, full=2) == 2
    monkeypatch.setenv("SAE_BOOK_PROFILE", " CI ")
    assert current_profile() == "ci" and by_profile(ci=1, full=2) == 1


def test_unknown_profile_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("SAE_BOOK_PROFILE", "huge")
    with pytest.raises(ValueError, match="'huge' is not a known run profile; use one of ci, full"):
        current_profile()


def test_default_profile_follows_hardware(monkeypatch):
    import torch

    monkeypatch.delenv("SAE_BOOK_PROFILE", raising=False)
    assert current_profile() == ("full" if torch.cuda.is_available() else "ci")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert current_profile() == "full"


def test_colab_defaults_to_ci_even_on_a_gpu(monkeypatch):
    import sys
    import types

    import torch

    monkeypatch.delenv("SAE_BOOK_PROFILE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert current_profile() == "ci"
    monkeypatch.setenv("SAE_BOOK_PROFILE", "full")  # the reader's choice still wins
    assert current_profile() == "full"


def test_report_asserts_records_and_saves(tmp_path):
    report = ReplicationReport("ch")
    report.check("holds", ours="1.0", passed=True, paper="1.0")
    report.record("differs", ours="0.3", status="differs", paper="0.5")
    with pytest.raises(AssertionError, match=r"\[ch\] replication check failed: breaks \(ours: 2; paper: —\)"):
        report.check("breaks", ours="2", passed=False)
    table = report.table()
    assert list(table["status"]) == ["pass", "differs"]
    saved = json.loads(report.save(tmp_path).read_text())
    assert [c["claim"] for c in saved] == ["holds", "differs"]


def test_report_kinds_separate_replications_findings_and_mechanics(tmp_path):
    from sae_lib.report import load_reports

    report = ReplicationReport("ch")
    report.check("paper claim", ours="1.0", passed=True, paper="1.0")
    report.check("our own result", ours="2", passed=True)
    report.check("shapes", ours="ok", passed=True, kind="mechanics")
    report.record("not comparable", ours="3", status="differs", paper="4", kind="finding")
    assert list(report.table()["kind"]) == ["replication", "finding", "mechanics", "finding"]
    with pytest.raises(ValueError, match="kind must be one of"):
        report.check("typo", ours="1", passed=True, kind="mechanic")
    with pytest.raises(ValueError, match="needs the paper's number"):
        report.check("no paper number", ours="1", passed=True, kind="replication")
    with pytest.raises(ValueError, match="needs the paper's number"):
        report.record("shipped, no paper number", ours="1", status="x", kind="replication (shipped run)")
    report.check("read from a shipped run", ours="1", passed=True, paper="2", kind="replication (shipped run)")
    report.save(tmp_path)
    assert [c.kind for c in load_reports(tmp_path)["ch"]] == ["replication", "finding", "mechanics", "finding",
                                                               "replication (shipped run)"]
