#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv.
# Idempotent: it reinstalls only when pyproject.toml or requirements.lock changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-dev,s3,dask}

stamp="$VENV/.spatialboost-installed"
want=$(cat pyproject.toml requirements.lock 2>/dev/null | sha256sum | cut -d' ' -f1)-$EXTRAS

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing spatialboost[$EXTRAS] into $VENV (first time: about 5 minutes)"
    # sam2's CUDA extension is optional; skipping it keeps the install CPU-only and fast.
    # requirements.lock pins the resolved set so that the resolver does no backtracking.
    SAM2_BUILD_CUDA=0 "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        -c requirements.lock -e ".[$EXTRAS]"
    echo "$want" > "$stamp"
fi
