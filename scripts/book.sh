#!/usr/bin/env bash
# Set up .venv, execute every chapter and build the site into _build/html (open _build/html/index.html).
# Warnings are errors: a chapter that raises, or a claim it asserts that stops holding, fails the build.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
export TQDM_DISABLE=${TQDM_DISABLE:-1}            # progress bars are for live sessions, not the page
export SAE_BOOK_REPORTS=${SAE_BOOK_REPORTS:-$PWD/_build/checks}
rm -rf "$SAE_BOOK_REPORTS"
.venv/bin/jupyter-book build . --all -W -n --keep-going
echo "==> the book is at $PWD/_build/html/index.html"
