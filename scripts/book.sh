#!/usr/bin/env bash
# Set up .venv, execute every chapter and build the site into _build/html (open _build/html/index.html).
# Warnings are errors: a chapter that raises, or a claim it asserts that stops holding, fails the build.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
export TQDM_DISABLE=${TQDM_DISABLE:-1}            # progress bars are for live sessions, not the page
export SAE_BOOK_REPORTS=$PWD/_build/checks        # each chapter saves its checks here for the scorecard
rm -rf "$SAE_BOOK_REPORTS"
profile=$(.venv/bin/python -c "from sae_lib import current_profile; print(current_profile())")
config=_config.yml
if [ "$profile" = full ]; then                     # hour-long chapters need longer per-cell timeouts
    mkdir -p _build
    sed 's/^  timeout: 600 .*/  timeout: 7200/' _config.yml > _build/_config_full.yml
    config=_build/_config_full.yml
fi
echo "==> building the book with the '$profile' profile"
.venv/bin/jupyter-book build . --config "$config" --all -W -n --keep-going
echo "==> the book is at $PWD/_build/html/index.html"
