#!/usr/bin/env bash
# Set up .venv (if needed) and run the demo pipeline end to end: offline, on CPU.
# A second run recomputes nothing (DVC's cache). Extra arguments go to `dvc repro`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
.venv/bin/dvc repro "$@"
