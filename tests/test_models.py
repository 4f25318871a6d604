import pytest

from sae_lib import StandInForbiddenError, fall_back_to_standin, standins_allowed


def test_standin_banner_is_loud(monkeypatch, capsys):
    monkeypatch.delenv("SAE_BOOK_NO_STANDINS", raising=False)
    assert standins_allowed()
    fall_back_to_standin("gpt2", "hub unreachable")
    out = capsys.readouterr().out
    assert "STAND-IN MODEL" in out and "RANDOM WEIGHTS" in out and "hub unreachable" in out


def test_standins_can_be_forbidden(monkeypatch):
    monkeypatch.setenv("SAE_BOOK_NO_STANDINS", "1")
    assert not standins_allowed()
    with pytest.raises(StandInForbiddenError, match="SAE_BOOK_NO_STANDINS forbids a stand-in"):
        fall_back_to_standin("gpt2", "hub unreachable")
