"""The dashboard's browser-test harness: the real stack (the launcher's ASGI server + a Celery worker on
the test database and redis, static files collected fresh by WhiteNoise's storage) and Playwright pages
that fail the test on any browser console error.

Use the fixtures in a test module under tests/dashboard/ (its conftest imports them):

    pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

    def test_something(live: LiveStack, page: Page) -> None:
        page.goto(live.url("/accounts/login/"))
        ...
        shot(page, "login")
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tests.browser import screenshot_dir
from tests.execution.live_transport import AsgiServer, start_asgi_server
from tests.services import PROJECT_ROOT, CeleryWorker, service_env, start_celery_worker

# What a phone shows: the pages must fit it without sideways scrolling.
PHONE_VIEWPORT = {"width": 375, "height": 740}


DASHBOARD_ASSETS = PROJECT_ROOT / "dashboard" / "assets"
DASHBOARD_BUILT = PROJECT_ROOT / "dashboard" / "static" / "dashboard" / "dist" / ".built"


def dashboard_assets_stale() -> bool:
    """The Makefile's rule: the build's stamp is older than an asset source or the npm install."""
    if not DASHBOARD_BUILT.exists():
        return True
    built = DASHBOARD_BUILT.stat().st_mtime
    sources = [*DASHBOARD_ASSETS.iterdir(), PROJECT_ROOT / "node_modules" / ".installed"]
    return any(source.exists() and source.stat().st_mtime > built for source in sources)


def collect_static(static_root: Path) -> None:
    """Build the dashboard's assets when stale, then collect every app's static files as `make setup` does.

    The build writes into the source tree, which every test process reads (a parallel run's other
    workers too): one process builds at a time (a lock file), and only when a source is newer than
    the last build (`make test` has built them already).
    """
    lock_path = PROJECT_ROOT / "var" / "dashboard-build.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if dashboard_assets_stale():
            subprocess.run(["npm", "run", "--silent", "build:dashboard"], cwd=PROJECT_ROOT, check=True)
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--clear", "--verbosity", "0"],
        cwd=PROJECT_ROOT,
        env=service_env(LIGHTFAST_STATIC_ROOT=str(static_root)),
        check=True,
    )


@dataclass
class LiveStack:
    """The ASGI server and a Celery worker serving the test database; `url(path)` is an absolute URL."""

    server: AsgiServer
    worker: CeleryWorker
    media_root: Path

    @property
    def base_url(self) -> str:
        return self.server.http

    def url(self, path: str) -> str:
        return f"{self.server.http}{path}"


@pytest.fixture(scope="session")
def live_static_root(django_db_setup: Any) -> Path:
    """Static files collected once per session into the test data dir (never a stale `var/static`)."""
    root = Path(settings.DATA_DIR) / "static-live"
    collect_static(root)
    return root


# Package scope: the stack's Celery worker consumes every queued run of the test database, so it must
# be gone before tests outside tests/dashboard/ count runs (tests/organizations/test_quotas.py).
@pytest.fixture(scope="package")
def live(
    django_db_setup: Any, redis_server: str, live_static_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    """The real stack for the session's browser tests (each test still needs `transactional_db`)."""
    media = tmp_path_factory.mktemp("live-media")
    saved = {name: os.environ.get(name) for name in ("LIGHTFAST_STATIC_ROOT", "LIGHTFAST_MEDIA_ROOT")}
    # Service processes read their settings from the environment (tests/services.py copies it).
    os.environ["LIGHTFAST_STATIC_ROOT"] = str(live_static_root)
    os.environ["LIGHTFAST_MEDIA_ROOT"] = str(media)
    worker = start_celery_worker()
    try:
        server = start_asgi_server()
    except BaseException:
        worker.stop()
        raise
    try:
        yield LiveStack(server=server, worker=worker, media_root=media)
    finally:
        server.stop()
        worker.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass
class ConsoleWatch:
    """Every console error, uncaught page error and failed request a page showed."""

    errors: list[str] = field(default_factory=list)
    # Substrings of errors a test expects, each with its reason (see `allow`).
    allowed: dict[str, str] = field(default_factory=dict)

    def allow(self, fragment: str, *, reason: str) -> None:
        """Tolerate errors containing `fragment` (a third-party quirk the test names and explains)."""
        self.allowed[fragment] = reason

    @property
    def unexpected(self) -> list[str]:
        return [error for error in self.errors if not any(fragment in error for fragment in self.allowed)]

    def attach(self, page: Any) -> None:
        page.on("console", lambda message: self._console(message))
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.on("requestfailed", lambda request: self._failed(request))

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(f"console error: {message.text} at {message.location}")

    def _failed(self, request: Any) -> None:
        failure = request.failure or ""
        # A navigation that replaced a pending request (a form submit, a reload) aborts it: not an error.
        if "ERR_ABORTED" not in failure:
            self.errors.append(f"request failed: {request.method} {request.url}: {failure}")


def _new_page(chromium: Any, live: LiveStack, request: pytest.FixtureRequest, **context_options: Any) -> Any:
    context = chromium.new_context(base_url=live.base_url, **context_options)
    context.set_default_timeout(15_000)
    page = context.new_page()
    watch = ConsoleWatch()
    watch.attach(page)
    request.node.console_watch = watch

    def finish() -> None:
        context.close()
        assert not watch.unexpected, "the browser console showed errors:\n" + "\n".join(watch.unexpected)

    request.addfinalizer(finish)
    return page


@pytest.fixture
def page(chromium: Any, live: LiveStack, request: pytest.FixtureRequest) -> Any:
    """A desktop-sized page of a fresh browser context; any console error fails the test
    (`console_watch(request).allow(...)` names an expected one)."""
    return _new_page(chromium, live, request, viewport={"width": 1280, "height": 900})


@pytest.fixture
def phone_page(chromium: Any, live: LiveStack, request: pytest.FixtureRequest) -> Any:
    """A 375 px wide page (a phone); any console error fails the test."""
    return _new_page(chromium, live, request, viewport=PHONE_VIEWPORT, is_mobile=True, has_touch=True)


def console_watch(request: pytest.FixtureRequest) -> ConsoleWatch:
    """The console watch of the test's page."""
    watch: ConsoleWatch = request.node.console_watch
    return watch


def shot(page: Any, step: str) -> Path:
    """Save a full-page screenshot of the current step under var/screenshots/ (CI keeps var/)."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "test").split(" ")[0].split("::")[-1]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{test}-{step}")
    path = screenshot_dir() / "dashboard" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    # caret="initial": hiding the caret leaves `style=""` on the focused input, which htmx's settling then
    # copies with setAttribute, a violation of the pages' CSP (style-src 'self').
    page.screenshot(path=str(path), full_page=True, caret="initial")
    return path


def no_sideways_scroll(page: Any) -> bool:
    """Whether the page fits its viewport's width."""
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))
