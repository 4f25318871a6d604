"""Every chapter executes top to bottom through nbval, and its committed .ipynb matches its .py.

The .py (Jupytext percent format) is the source of truth. Each test converts it to a fresh notebook
next to it in book/ (so the kernel's working directory is the one a reader has) and runs
``pytest --nbval-lax`` on that notebook: any cell that raises, including a failed replication
check, fails the chapter.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]_*.py"))
CELL_TIMEOUT_S = 900


def cells(notebook):
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_ipynb_pair_is_in_sync_and_has_no_outputs(chapter):
    paired = chapter.with_suffix(".ipynb")
    assert paired.exists(), f"{paired.name} is missing: run .venv/bin/jupytext --sync {chapter.relative_to(BOOK.parent)}"
    notebook = nbformat.read(paired, as_version=4)
    assert cells(notebook) == cells(jupytext.read(chapter)), (
        f"{paired.name} is out of sync with {chapter.name}: run .venv/bin/jupytext --sync book/{chapter.name}"
    )
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{paired.name} must be committed without outputs"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_executes_under_nbval(chapter, tmp_path):
    notebook = BOOK / f".nbval-{chapter.stem}.ipynb"
    nbformat.write(jupytext.read(chapter), notebook)
    env = {**os.environ, "SAE_BOOK_REPORTS": str(tmp_path / "checks"), "TQDM_DISABLE": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", "--nbval-current-env",
               f"--nbval-cell-timeout={CELL_TIMEOUT_S}", str(notebook)]
    start = time.perf_counter()
    try:
        result = subprocess.run(command, cwd=BOOK, env=env, capture_output=True, text=True)
    finally:
        notebook.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    print(f"{chapter.stem}: executed in {seconds:.1f} s")
    assert result.returncode == 0, f"{chapter.name} failed under nbval:\n{result.stdout[-8000:]}\n{result.stderr[-2000:]}"
    assert (tmp_path / "checks" / f"{chapter.stem}.json").exists(), f"{chapter.name} did not save its replication checks"
