"""Execute one chapter (its Jupytext ``.py`` source) top to bottom, as a reader's kernel would.

    .venv/bin/python scripts/run_chapter.py book/05_matching_pursuit.py [--out executed.ipynb]

Prints how long each slow cell took and the total, and exits non-zero with the failing cell's
traceback if any cell raises (a replication check that stops holding raises). The kernel runs in
``book/``, the folder a reader opens, with this checkout's ``sae_lib`` first on its path.
The test suite uses :func:`execute_chapter` to run every chapter once and build the site from the
executed notebooks.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]


class ChapterFailed(RuntimeError):
    """A cell of the chapter raised; the message carries the cell's source and traceback."""


def execute_chapter(source: Path, *, out: Path | None = None, env: dict | None = None,
                    cell_timeout: int = 900) -> tuple[float, list[tuple[float, str]]]:
    """Run ``source`` in a fresh kernel; return (total seconds, [(seconds, first line) per cell]).

    ``env`` replaces the kernel's environment variables (default: this process's). The executed
    notebook, outputs and all, is written to ``out`` when given, even when a cell fails."""
    source = Path(source).resolve()
    notebook = jupytext.read(source)
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    client = NotebookClient(notebook, timeout=cell_timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(source.parent)}})
    cells: list[tuple[float, str]] = []
    start = time.perf_counter()
    try:
        with client.setup_kernel(env=env):
            for index, cell in enumerate(notebook.cells):
                began = time.perf_counter()
                client.execute_cell(cell, index)
                if cell.cell_type == "code":
                    cells.append((time.perf_counter() - began, cell.source.splitlines()[0] if cell.source else ""))
    except CellExecutionError as error:
        raise ChapterFailed(f"{source.name} failed:\n{error}") from None
    finally:
        if out is not None:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook, out)
    return time.perf_counter() - start, cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapter", type=Path)
    parser.add_argument("--out", type=Path, help="write the executed notebook here")
    parser.add_argument("--slow", type=float, default=2.0, help="list cells slower than this (s)")
    args = parser.parse_args()
    try:
        total, cells = execute_chapter(args.chapter, out=args.out)
    except ChapterFailed as error:
        sys.exit(str(error))
    for seconds, first_line in cells:
        if seconds >= args.slow:
            print(f"{seconds:7.1f} s  {first_line[:80]}")
    print(f"{args.chapter.name}: {total:.1f} s in all")


if __name__ == "__main__":
    main()
