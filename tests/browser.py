"""Headless Chromium for tests that open the Prefect and MLflow UIs: Debian's `chromium`, driven by
playwright (its Python package against the system browser; `playwright install` is never run and
nothing downloads a browser). scripts/setup.sh installs the browser for the tests.

    with chromium_page() as page:                  # skips (or fails) with the reason when there is none
        page.goto(url)
        expect(page.get_by_text("Completed")).to_be_visible(timeout=60_000)
        save_screenshot(page, "prefect-flow-run")   # reports/screenshots/prefect-flow-run.png
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Flags this machine needs: no sandbox as root, no GPU, and no background connections (refused here).
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]  # fmt: skip
UNAVAILABLE_NOTE = ".chromium-unavailable"  # written by scripts/setup.sh into the venv when it could not install


def chromium_path() -> str | None:
    """The system Chromium: $SPATIALBOOST_CHROMIUM, else chromium on PATH."""
    explicit = os.environ.get("SPATIALBOOST_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def missing_browser(venv: Path = Path(sys.prefix)) -> None:
    """Skip when the browser cannot be installed here (scripts/setup.sh left its reason in the venv,
    or this is no root with apt-get); fail when it could have been but was not."""
    note = venv / UNAVAILABLE_NOTE
    if note.is_file():
        pytest.skip(f"headless Chromium could not be installed: {note.read_text().strip()}")
    can_install = hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get") is not None
    if can_install:
        pytest.fail("headless Chromium is missing but could be installed (root, apt-get): run "
                    "`SPATIALBOOST_BROWSER=1 bash scripts/setup.sh` (or scripts/test.sh, which does)")  # fmt: skip
    pytest.skip("headless Chromium is missing and cannot be installed here (needs root and apt-get: "
                "apt-get install chromium)")  # fmt: skip


def screenshot_dir() -> Path:
    """Where screenshots go: $SPATIALBOOST_SCREENSHOTS, else reports/screenshots (ignored by git)."""
    folder = Path(os.environ.get("SPATIALBOOST_SCREENSHOTS") or ROOT / "reports" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_screenshot(page: Any, name: str, full_page: bool = False) -> Path:
    path = screenshot_dir() / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


@contextlib.contextmanager
def chromium_page(init_script: str | None = None) -> Iterator[Any]:
    """A fresh headless Chromium (new empty profile) and one 1400 x 900 page."""
    executable = chromium_path()
    if executable is None:
        missing_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            if init_script:
                context.add_init_script(init_script)
            yield context.new_page()
        finally:
            browser.close()
