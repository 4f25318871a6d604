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


def test_hub_probe_reports_why_and_respects_offline_mode(monkeypatch):
    import socket

    from sae_lib import hub_unreachable_reason

    def refuse(*args, **kwargs):
        raise OSError("no route")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert "huggingface.co is unreachable (no route)" == hub_unreachable_reason()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the local cache needs no network: let the loader try it
    assert hub_unreachable_reason() is None


def test_coco_fails_fast_without_the_hub(monkeypatch):
    from sae_lib import image_data

    monkeypatch.setattr(image_data, "hub_unreachable_reason", lambda timeout=3.0: "offline in tests")
    with pytest.raises(ConnectionError, match="offline in tests"):
        image_data.coco_captions(3)
