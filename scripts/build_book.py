"""Execute every chapter once, then render the site from the executed notebooks.

    .venv/bin/python scripts/build_book.py [--workers 2] [--out .]

Each chapter runs in its own kernel (``--workers`` of them side by side, the cores shared out
between them); a chapter whose cell raises, including a replication check that stops holding,
is reported with its traceback and fails the build. The scorecard page runs after every chapter,
from the checks they saved. Jupyter Book then renders the executed notebooks without running them
again (warnings are errors), into ``<out>/_build/html``. The test suite builds the site the same
way, so every chapter executes exactly once per test run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_chapter import ChapterFailed, execute_chapter  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]_*.py"))
PAGES = ["intro.md", "references.md", "references.bib", "appendix_performance.md"]


def execute_all(out: Path, *, workers: int = 2, cell_timeout: int = 900,
                env: dict | None = None) -> dict[str, float | str]:
    """Run every chapter, then the scorecard, into ``out/book/*.ipynb``.

    Returns seconds per chapter, or the failure text for a chapter that raised."""
    env = dict(os.environ if env is None else env)
    env.setdefault("SAE_BOOK_REPORTS", str(out / "checks"))
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // workers)))
    env.setdefault("TQDM_DISABLE", "1")
    for stale in Path(env["SAE_BOOK_REPORTS"]).glob("*.json"):  # the scorecard reads only this run's
        stale.unlink()

    def run(chapter: Path) -> float | str:
        try:
            seconds, _ = execute_chapter(chapter, out=out / "book" / f"{chapter.stem}.ipynb", env=env,
                                         cell_timeout=cell_timeout)
        except ChapterFailed as error:
            print(f"==> {chapter.stem} FAILED", flush=True)
            return str(error)
        print(f"==> {chapter.stem} executed in {seconds:.1f} s", flush=True)
        return seconds

    with ThreadPoolExecutor(max_workers=workers) as pool:
        # Slowest first (by file size, a fair proxy), so the last worker is not left with a long one.
        order = sorted(CHAPTERS, key=lambda p: -p.stat().st_size)
        results = dict(zip((c.stem for c in order), pool.map(run, order)))
    if all(isinstance(r, float) for r in results.values()):
        results["scorecard"] = run(BOOK / "scorecard.py")
    return {name: results[name] for name in sorted(results)}


def stage(out: Path) -> Path:
    """A copy of the book's sources with the executed notebooks in place of the ``.py`` chapters."""
    source = out / "stage"
    shutil.rmtree(source, ignore_errors=True)
    (source / "book").mkdir(parents=True)
    for page in PAGES:
        shutil.copy(BOOK / page, source / "book" / page)
    for notebook in (out / "book").glob("*.ipynb"):
        shutil.copy(notebook, source / "book" / notebook.name)
    shutil.copy(ROOT / "_toc.yml", source / "_toc.yml")
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"  # already executed, outputs and all
    config["exclude_patterns"] = [p for p in config["exclude_patterns"] if p != "book/*.ipynb"]
    (source / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return source


def render(source: Path, out: Path) -> subprocess.CompletedProcess:
    """Jupyter Book 1 over the staged sources: warnings are errors, into ``out/_build/html``."""
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    command = [str(jupyter_book), "build", str(source), "--path-output", str(out), "--all", "-W", "-n",
               "--keep-going"]
    return subprocess.run(command, capture_output=True, text=True)


def build(out: Path, *, workers: int = 2, cell_timeout: int = 900) -> tuple[dict, subprocess.CompletedProcess | None]:
    """Execute into ``out/_build/executed``, stage, render into ``out/_build/html``; the render is
    skipped when a chapter failed."""
    executed = out.resolve() / "_build" / "executed"
    results = execute_all(executed, workers=workers, cell_timeout=cell_timeout)
    (executed / "times.json").write_text(json.dumps(results, indent=1))
    if not all(isinstance(r, float) for r in results.values()):
        return results, None
    return results, render(stage(executed), out.resolve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="the site goes to OUT/_build/html")
    parser.add_argument("--workers", type=int, default=1, help="chapters executed side by side")
    parser.add_argument("--cell-timeout", type=int, default=900, help="seconds one cell may run")
    args = parser.parse_args()
    start = time.perf_counter()
    results, rendered = build(args.out, workers=args.workers, cell_timeout=args.cell_timeout)
    for name, result in results.items():
        print(f"  {name:<24} {f'{result:7.1f} s' if isinstance(result, float) else 'FAILED'}")
    failed = {name: r for name, r in results.items() if not isinstance(r, float)}
    for name, text in failed.items():
        print(f"\n==> {name} failed:\n{text[-6000:]}", file=sys.stderr)
    if failed:
        sys.exit(f"{len(failed)} chapter(s) failed: {', '.join(failed)}")
    if rendered.returncode != 0:
        sys.exit(f"the site did not build:\n{rendered.stdout[-6000:]}\n{rendered.stderr[-3000:]}")
    print(f"==> executed and rendered in {time.perf_counter() - start:.0f} s: "
          f"{(args.out / '_build' / 'html' / 'index.html').resolve()}")


if __name__ == "__main__":
    main()
