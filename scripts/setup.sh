#!/usr/bin/env bash
# Create the virtual environment .venv (once) and install requirements.txt into it (again only
# when requirements.txt or pyproject.toml changed). Sourced by book.sh and test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements-installed
if [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "==> installing requirements.txt into .venv (a few minutes the first time)"
    .venv/bin/python -m pip install --disable-pip-version-check -q -r requirements.txt
    touch "$stamp"
fi
