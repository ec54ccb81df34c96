# Environment shared by the demo, the tests and CI. Sourced, not run.
# Everything Prefect writes stays inside the repository (ignored by git), never in ~/.prefect.
_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$_root/.venv/bin:$PATH"
# This checkout's code first, whichever checkout (or git worktree) the venv was installed from.
export PYTHONPATH="$_root/src:$_root${PYTHONPATH:+:$PYTHONPATH}"
export PREFECT_HOME=${PREFECT_HOME:-$_root/.prefect}
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-90}
export PREFECT_LOGGING_LEVEL=${PREFECT_LOGGING_LEVEL:-WARNING}
# Offline by design: nothing in the demo or the tests may reach a model hub.
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
export MPLBACKEND=Agg
unset _root
