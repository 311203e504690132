"""Headless Debian Chromium driven by Playwright (the Python package), for the browser tests.

Import the fixtures into a conftest or test module: `from tests.browser import chromium  # noqa: F401`.
Chromium is Debian's (`/usr/bin/chromium`, `LIGHTFAST_CHROMIUM` overrides): Playwright never
downloads a browser here. `.ci/run` installs it with apt when it is missing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("LIGHTFAST_CHROMIUM", "/usr/bin/chromium")
ASYNC_UNSAFE = "DJANGO_ALLOW_ASYNC_UNSAFE"


def chromium_path() -> str | None:
    """The Chromium executable, or None when this machine has none."""
    if Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    """A headless Chromium (a Playwright `Browser`), shared by one module's browser tests.

    Playwright's sync API leaves its event loop marked running on the main thread for as long as it
    is open. Django then refuses the ORM calls made on that thread (`SynchronousOnlyOperation`),
    and its test client cannot call async views (AsyncToSync refuses a thread with a running loop),
    so the browser lives for one module only: the modules after it run on a clean thread. Within
    the module, the tests' own ORM calls are plain sync code, so that check is switched off while
    the browser lives (pytest-playwright's advice for Django; the web server and the workers are started
    without it, tests/services.py); a browser test module does not use Django's test client on
    async views.
    """
    executable = chromium_path()
    if executable is None:
        pytest.skip(reason="Debian's chromium is not installed (apt-get install chromium; .ci/run does)")
    from playwright.sync_api import sync_playwright

    before = os.environ.get(ASYNC_UNSAFE)
    os.environ[ASYNC_UNSAFE] = "true"
    try:
        yield from _launched(sync_playwright, executable)
    finally:
        if before is None:
            os.environ.pop(ASYNC_UNSAFE, None)
        else:
            os.environ[ASYNC_UNSAFE] = before


def _launched(sync_playwright: Any, executable: str) -> Iterator[object]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            # Running as root in a container: Chromium's own sandbox needs user namespaces it may not get.
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        try:
            yield browser
        finally:
            browser.close()


def screenshot_dir() -> Path:
    """Where browser tests save their screenshots (CI keeps var/ as artifacts)."""
    default = Path(__file__).resolve().parent.parent / "var" / "screenshots"
    base = Path(os.environ.get("LIGHTFAST_SCREENSHOTS", default))
    base.mkdir(parents=True, exist_ok=True)
    return base
