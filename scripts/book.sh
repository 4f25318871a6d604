#!/usr/bin/env bash
# Set up .venv, execute every chapter and build the site into _build/html (open _build/html/index.html).
# A chapter that raises, or a claim it asserts that stops holding, fails the build; so do warnings.
# Extra arguments go to scripts/build_book.py, e.g. `bash scripts/book.sh --workers 2`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
export TQDM_DISABLE=${TQDM_DISABLE:-1}            # progress bars are for live sessions, not the page
export SAE_BOOK_REPORTS=$PWD/_build/checks        # each chapter saves its checks here for the scorecard
rm -rf "$SAE_BOOK_REPORTS"
profile=$(.venv/bin/python -c "from sae_lib import current_profile; print(current_profile())")
timeout=900
[ "$profile" = full ] && timeout=7200               # hour-long chapters need longer per-cell timeouts
echo "==> executing every chapter with the '$profile' profile, then rendering the site"
.venv/bin/python scripts/build_book.py --cell-timeout "$timeout" "$@"
