#!/usr/bin/env bash
# Set up .venv and run the whole test suite: unit tests of sae_lib, every chapter executed once (and the
# site rendered from those runs), the site checked in headless Chromium (installed here with apt-get if
# it is missing).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/test_saes.py -x`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
    echo "==> installing Chromium for the browser test (Debian/Ubuntu package 'chromium')"
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
# SAELens, for tests/test_saelens_interop.py only: sae_lib saves SAEs in SAELens's format, and that test has
# SAELens itself load them. The book does not need it, so it is not in requirements.txt. Installed once, pinned,
# and constrained to the versions already in .venv: it adds about 20 packages of its own and changes none
# (torch, transformer-lens, ...); if it ever needed to, pip fails here instead.
SAE_LENS_VERSION=6.54.12
if [ "$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("sae-lens"))' 2>/dev/null)" \
        != "$SAE_LENS_VERSION" ]; then
    echo "==> installing sae-lens $SAE_LENS_VERSION into .venv for tests/test_saelens_interop.py"
    constraints=$(mktemp)
    .venv/bin/python -m pip freeze --exclude-editable | grep -iv '^sae[-_]lens==' >"$constraints"
    .venv/bin/python -m pip install --disable-pip-version-check -q -c "$constraints" "sae-lens==$SAE_LENS_VERSION"
    rm -f "$constraints"
fi
export TQDM_DISABLE=${TQDM_DISABLE:-1}
# Two workers, one test file each at a time: test_site.py executes the chapters (two kernels side by
# side) while the other worker runs the unit tests. One torch thread per process keeps two cores from
# thrashing.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
.venv/bin/python -m pytest -n "${SAE_BOOK_TEST_WORKERS:-2}" --dist loadfile -p no:cacheprovider "$@"
