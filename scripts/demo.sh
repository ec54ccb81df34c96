#!/usr/bin/env bash
# Set up .venv (if needed) and run the demo pipeline end to end: offline, on CPU.
# A second run recomputes nothing (DVC's cache). The pipeline runs through
# `python -m flows.pipeline`: `dvc repro` with ONE Prefect server for all stages, started here
# and stopped at the end, instead of an ephemeral Prefect API per stage
# (benchmarks/results/prefect_overhead.md). Extra arguments go to it, e.g.
# `-S world.n_train=64` (runs `dvc exp run -S ...`); DEMO_PLAIN_DVC=1 runs plain `dvc repro`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
if [ "${DEMO_PLAIN_DVC:-0}" = 1 ]; then
    .venv/bin/dvc repro "$@"
else
    # INFO: the pipeline task streams `dvc repro`'s output into the Prefect log.
    PREFECT_LOGGING_LEVEL=INFO .venv/bin/python -m flows.pipeline --no-push "$@"
fi
