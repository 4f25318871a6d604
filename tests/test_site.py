"""Every chapter executes, and the rendered book is right as a reader sees it.

Builds the site exactly as ``scripts/book.sh`` does (``scripts/build_book.py``): every chapter executed
once, in a fresh kernel, two side by side; any cell that raises, including a replication check that
stopped holding, fails that chapter's test with its traceback; the site is rendered from the executed
notebooks with warnings as errors. Then serves it on localhost, opens every chapter in headless Chromium
and checks what is on the page after its scripts ran: outputs rendered, figures drawn, math typeset, a
Colab link to the chapter's ``.ipynb``, no error output. Screenshots are kept in
``_build/screenshots/`` (or ``$SAE_BOOK_ARTIFACTS``).

Set ``SAE_BOOK_SITE=/path/to/_build/html`` to check an already built site instead of building one.
"""

import functools
import html.parser
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p.stem for p in (ROOT / "book").glob("[0-9][0-9]_*.py"))
sys.path.insert(0, str(ROOT / "scripts"))
import build_book  # noqa: E402
from run_chapter import ChapterFailed, execute_chapter  # noqa: E402

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--virtual-time-budget=20000"]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Chromium is needed for the browser test: `apt-get install chromium` (scripts/test.sh does this)")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(seconds or failure text per chapter, the render's result or None), from one build."""
    if os.environ.get("SAE_BOOK_SITE"):
        pytest.skip("checking an already built site")
    output = tmp_path_factory.mktemp("site")
    workers = int(os.environ.get("SAE_BOOK_CHAPTER_WORKERS", "2"))
    return build_book.build(output, workers=workers) + (output,)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_executes(chapter, built):
    results, _, _ = built
    result = results[chapter]
    assert isinstance(result, float), result[-8000:]
    print(f"{chapter}: executed in {result:.1f} s")


@pytest.fixture(scope="module")
def site(request) -> Path:
    if os.environ.get("SAE_BOOK_SITE"):
        return Path(os.environ["SAE_BOOK_SITE"])
    results, rendered, output = request.getfixturevalue("built")
    failed = [name for name, result in results.items() if not isinstance(result, float)]
    assert not failed, f"not rendered: chapters failed to execute: {failed}"
    assert rendered.returncode == 0, f"the book did not build:\n{rendered.stdout[-6000:]}\n{rendered.stderr[-3000:]}"
    return output / "_build" / "html"


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    path = Path(os.environ.get("SAE_BOOK_ARTIFACTS", ROOT / "_build" / "screenshots"))
    path.mkdir(parents=True, exist_ok=True)
    return path


BROWSER_CRASH_RETRIES = 2


def run_chromium(args: list[str]) -> subprocess.CompletedProcess:
    """One headless Chromium run, started again (at most BROWSER_CRASH_RETRIES times) when the
    browser itself dies by a signal: on a busy CI machine headless Chromium sometimes segfaults
    (return code -11) before it loads anything, which says nothing about the page. A page that
    fails to load, or a non-signal error, is returned at once and fails the test."""
    for attempt in range(BROWSER_CRASH_RETRIES + 1):
        result = subprocess.run([chromium(), *CHROMIUM_FLAGS, *args], capture_output=True,
                                text=True, timeout=180)
        if result.returncode >= 0 or attempt == BROWSER_CRASH_RETRIES:
            return result
        print(f"Chromium died by signal {-result.returncode}; starting it again")


def open_page(url: str, tmp_path: Path, screenshot: Path) -> str:
    """The page's DOM after its scripts ran (plotly, MathJax), and a screenshot of its top."""
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = run_chromium([*profile, "--dump-dom", url])
    assert dom.returncode == 0 and dom.stdout, f"Chromium could not open {url}: {dom.stderr[-2000:]}"
    shot = run_chromium([*profile, "--window-size=1280,2400", f"--screenshot={screenshot}", url])
    assert shot.returncode == 0 and screenshot.exists(), f"no screenshot of {url}: {shot.stderr[-2000:]}"
    return dom.stdout


class SolutionVisibility(html.parser.HTMLParser):
    """Walks a page's DOM and records, for each solution function the page defines
    (``def name_solution``), whether it sits inside a collapsed toggle (an element the toggle
    button's script marked ``toggle-hidden``)."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}

    def __init__(self):
        super().__init__()
        self.stack: list[set[str]] = []  # the classes of each open element
        self.previous_word = ""
        self.definitions: dict[str, bool] = {}  # solution function -> hidden on load

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(set((dict(attrs).get("class") or "").split()))

    def handle_endtag(self, tag):
        if tag not in self.VOID and self.stack:
            self.stack.pop()

    def handle_data(self, data):
        word = data.strip()
        if not word:
            return
        if self.previous_word == "def" and word.endswith("_solution"):
            self.definitions[word] = any("toggle-hidden" in classes for classes in self.stack)
        self.previous_word = word


def check_solutions_hidden(dom: str, server: str) -> None:
    """Every exercise has a solution, and on page load each solution is a collapsed dropdown whose
    content the toggle stylesheet hides; no solution code is outside one."""
    exercises = len(re.findall(r'<div class="[^"]*\bexercise\b[^"]*\badmonition\b', dom))
    solutions = re.findall(r'<div class="([^"]*\bsolution\b[^"]*\badmonition\b[^"]*)"', dom)
    assert exercises >= 2, f"a chapter needs at least 2 exercises, found {exercises}"
    assert len(solutions) == exercises, f"{exercises} exercises but {len(solutions)} solutions"
    shown = [classes for classes in solutions if "toggle-hidden" not in classes.split()]
    assert not shown, f"solutions visible on page load (no toggle-hidden class): {shown}"
    walker = SolutionVisibility()
    walker.feed(dom)
    assert walker.definitions, "no solution code found on the page"
    visible = [name for name, hidden in walker.definitions.items() if not hidden]
    assert not visible, f"solution code visible on page load: {visible}"
    # The class only hides anything because the toggle stylesheet says so.
    with urllib.request.urlopen(f"{server}/_static/togglebutton.css") as response:
        css = response.read().decode()
    rule = re.search(r"\.admonition\.toggle-hidden \.admonition-title ~ \*\s*\{([^}]*)\}", css)
    assert rule and "visibility: hidden" in rule.group(1), "togglebutton.css no longer hides collapsed content"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_page_as_a_reader_sees_it(chapter, server, artifacts, tmp_path):
    dom = open_page(f"{server}/book/{chapter}.html", tmp_path, artifacts / f"{chapter}.png")
    assert dom.count('class="cell_output') >= 3, "the chapter's outputs are not on the page"
    plotly_figures = dom.count('class="main-svg"')
    images = len(re.findall(r'<img[^>]+src="[^"]*(?:jupyter_execute|_images)/', dom))
    assert plotly_figures + images >= 1, "no figure was drawn"
    raw_math = len(re.findall(r'class="math[ "]', dom))
    typeset = dom.count("<mjx-container")
    assert raw_math == 0 or typeset >= raw_math, f"math not typeset: {typeset} of {raw_math} formulas"
    # A display formula the Markdown parser did not recognise leaves its dollar signs in the prose.
    prose = [re.sub(r"<code.*?</code>|<mjx-container.*?</mjx-container>|<[^>]+>", "", paragraph, flags=re.S)
             for paragraph in re.findall(r"<p(?:\s[^>]*)?>(.*?)</p>", dom, flags=re.S)]
    stray = [text.strip()[:120] for text in prose if "$" in text]
    assert not stray, f"dollar signs left in the text (math not parsed): {stray}"
    colab = re.findall(r'href="(https://colab\.research\.google\.com/[^"]+)"', dom)
    assert colab and all(link.endswith(f"book/{chapter}.ipynb") for link in colab), f"Colab link: {colab}"
    assert "Traceback (most recent call last)" not in dom and 'class="output traceback' not in dom
    assert "replication check failed" not in dom
    assert "Replication check" in dom, "the closing replication table is missing"
    check_solutions_hidden(dom, server)  # every exercise's solution is collapsed when the page loads


def test_scorecard_gathers_every_chapter(server, tmp_path, artifacts):
    dom = open_page(f"{server}/book/scorecard.html", tmp_path, artifacts / "scorecard.png")
    for chapter in CHAPTERS:
        title = next(line[4:] for line in (ROOT / "book" / f"{chapter}.py").read_text().splitlines()
                     if line.startswith("# # "))
        assert title.replace("&", "&amp;") in dom, f"scorecard lacks {chapter}"


def test_a_chapter_that_raises_fails_with_its_traceback(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text('# %% [markdown]\n# # Broken\n\n# %%\nx = 1\n\n# %%\n'
                      'assert x + 1 == 3, "a claim that stopped holding"\n')
    with pytest.raises(ChapterFailed, match="a claim that stopped holding") as failure:
        execute_chapter(broken, out=tmp_path / "broken.ipynb")
    assert "AssertionError" in str(failure.value) and "broken.py" in str(failure.value)
    assert (tmp_path / "broken.ipynb").exists(), "the executed notebook is kept for inspection"


def test_a_staged_site_renders_stored_outputs_without_running_them(tmp_path):
    """The render step never executes a chapter: it shows the outputs the executor stored."""
    executed = tmp_path / "executed"
    (executed / "book").mkdir(parents=True)
    import jupytext
    import nbformat

    notebook = jupytext.reads('# %% [markdown]\n# # Stored\n\n# %%\nraise SystemExit("ran again")\n',
                              fmt="py:percent")
    notebook.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="stored output 42\n")]
    notebook.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}  # as a kernel sets
    nbformat.write(notebook, executed / "book" / "01_stored.ipynb")
    source = build_book.stage(executed)
    (source / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/01_stored\n")
    (source / "book" / "intro.md").write_text("# Intro\n")
    rendered = build_book.render(source, tmp_path)
    assert rendered.returncode == 0, rendered.stdout[-4000:] + rendered.stderr[-2000:]
    page = (tmp_path / "_build" / "html" / "book" / "01_stored.html").read_text()
    assert "stored output 42" in page
