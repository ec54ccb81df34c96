#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv.
# Idempotent: it reinstalls only when pyproject.toml or requirements.lock changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-dev,s3,dask,robot}

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

# Offscreen OpenGL for MuJoCo (the robot extra, evaluate/robot/metaworld.py): Debian's EGL with Mesa's
# software rasteriser (llvmpipe) on a machine without a GPU. Installed only when missing.
if [[ ",$EXTRAS," == *",robot,"* ]] && ! ldconfig -p 2>/dev/null | grep -q "libEGL_mesa.so.0"; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing Debian's EGL + Mesa for MuJoCo's offscreen rendering (about 20 s)"
        export DEBIAN_FRONTEND=noninteractive
        pkgs="libegl1 libegl-mesa0 libgl1-mesa-dri libgles2"
        apt-get install -y -qq --no-install-recommends $pkgs >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends $pkgs >/dev/null 2>&1; } \
            || echo "setup: could not install EGL / Mesa: MuJoCo cannot render (apt-get install $pkgs)"
    else
        echo "setup: MuJoCo needs EGL + Mesa to render offscreen (Debian: apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri)"
    fi
fi

# Headless Chromium for the browser tests (tests/test_browser_uis.py, driven by playwright):
# Debian's package, never a browser download. Only when asked (scripts/test.sh asks) and missing.
# Where it cannot be installed (not root, no apt-get, no package), say why in the venv: the tests
# then skip with that reason; anywhere else a missing browser fails them.
if [ "${SPATIALBOOST_BROWSER:-0}" = 1 ]; then
    note="$VENV/.chromium-unavailable"
    if command -v chromium >/dev/null 2>&1; then
        rm -f "$note"
    elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing Debian's chromium for the browser tests (about 20 s)"
        export DEBIAN_FRONTEND=noninteractive
        if apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null 2>&1 \
                 && apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; }; then
            rm -f "$note"
        else
            echo "apt-get install chromium failed (no package or no mirror)" > "$note"
            echo "setup: could not install chromium: the browser tests will skip"
        fi
    else
        echo "not root or no apt-get: install chromium (Debian: apt-get install chromium) to run them" > "$note"
        echo "setup: chromium is missing and cannot be installed here: the browser tests will skip"
    fi
fi
