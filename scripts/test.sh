#!/usr/bin/env bash
# Set up .venv and run the whole test suite: unit tests of sae_lib, and every chapter through nbval.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/test_saes.py -x`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
export TQDM_DISABLE=${TQDM_DISABLE:-1}
.venv/bin/python -m pytest "$@"
