#!/usr/bin/env bash
# Set up .venv (if needed) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
SPATIALBOOST_BROWSER=${SPATIALBOOST_BROWSER:-1} bash scripts/setup.sh  # the browser tests need chromium
source scripts/env.sh
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
# pytest exits 5 when it collected no test: that is a failure of the suite, not a pass.
if [ "$rc" -eq 5 ]; then echo "test.sh: no tests were collected" >&2; exit 1; fi
exit "$rc"
