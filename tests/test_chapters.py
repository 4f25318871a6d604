"""Every chapter's committed .ipynb matches its .py and carries no outputs.

The .py (Jupytext percent format) is the source of truth; the .ipynb is its pair for Colab and the
launch buttons. That every chapter *executes* is tested once, in ``test_site.py``, by the same run that
renders the site from the executed notebooks.
"""

from pathlib import Path

import jupytext
import nbformat
import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]_*.py"))


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
