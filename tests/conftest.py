"""Shared fixtures: the real services every test talks to, a private media directory, tenancy fixtures.

Shared helpers (bundles: upload, ready versions, tool calls) are in tests/bundles.py.

Redis: with REDIS_URL unset (the embedded default) the suite starts its own
private redis-server on a unix socket in LIGHTFAST_DATA_DIR, like the launcher;
with REDIS_URL set (CI's second pass) it uses that server.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from lightfast_cloud.embedded_redis import EmbeddedRedis, start_embedded_redis
from tests.services import CeleryWorker, SharedServices, nothing_in_flight, start_celery_worker


@pytest.fixture(scope="session", autouse=True)
def _no_logging_tracebacks_after_the_session() -> Iterator[None]:
    """Daemon threads of the test process (the SQLite WAL checkpointer) may log after pytest closed
    the streams its log handlers write to: such a record is dropped instead of printed as a
    `--- Logging error ---` traceback at the end of the run."""
    yield
    logging.raiseExceptions = False


@pytest.fixture(scope="session", autouse=True)
def redis_server() -> Iterator[str]:
    """A redis for the cache, the broker and the channel layer."""
    embedded: EmbeddedRedis | None = None
    if settings.REDIS_EMBEDDED:
        embedded = start_embedded_redis(settings.DATA_DIR, persistent=False)
    try:
        yield settings.REDIS_URL
    finally:
        if embedded is not None:
            embedded.stop()


@pytest.fixture(scope="session", autouse=True)
def _static_files_from_the_apps() -> Iterator[None]:
    """Django's test client renders `{% static %}` from the apps' own files, without a collectstatic.

    The real stack uses hashed names from the manifest `make setup` collects; the browser tests
    (tests/dashboard/live.py) collect their own into the test data dir and serve that.
    """
    from django.test import override_settings

    static_root = settings.DATA_DIR / "static"
    static_root.mkdir(parents=True, exist_ok=True)
    override = override_settings(
        STORAGES={
            **settings.STORAGES,
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        },
        STATIC_ROOT=static_root,
        WHITENOISE_USE_FINDERS=True,
    )
    override.enable()
    try:
        yield
    finally:
        override.disable()


@pytest.fixture(autouse=True)
def _clear_cache(redis_server: str) -> Iterator[None]:
    """Each test starts with an empty cache (rate-limit counters, sessions)."""
    # Only our key prefix: a FLUSHDB would also drop Celery's queue bindings.
    from django.core.cache import cache

    client = cache._cache.get_client(write=True)  # type: ignore[attr-defined]
    keys = list(client.scan_iter(match=f"{settings.CACHES['default']['KEY_PREFIX']}:*", count=1000))
    if keys:
        client.delete(*keys)
    yield


@pytest.fixture(autouse=True)
def _openapi_validated_responses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every /api/v1/ response of Django's test client must agree with the OpenAPI schema."""
    from django.test import Client

    from tests.openapi_validation import openapi_response_validate

    original = Client.request

    def request(self: Client, **request: Any) -> Any:
        response = original(self, **request)
        openapi_response_validate(response)
        return response

    monkeypatch.setattr(Client, "request", request)


@pytest.fixture
def media_root(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty media directory for this test, also for a Celery worker or web server the test starts.

    The same path for every test (emptied before each), so that consecutive tests can share their
    service processes (`shared_services`).
    """
    root = settings.DATA_DIR / "test-media"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    settings.MEDIA_ROOT = str(root)
    # Service processes read their settings from the environment (tests/services.py copies os.environ).
    monkeypatch.setenv("LIGHTFAST_MEDIA_ROOT", str(root))
    return root


# The fixtures that take their process from `shared_services` (each fixture's name is its kind).
SHARED_SERVICE_FIXTURES = ("celery_worker", "asgi_server")


@pytest.fixture(scope="session")
def shared_services() -> Iterator[SharedServices]:
    """Service processes handed from test to test (tests/services.py: SharedServices)."""
    services = SharedServices()
    try:
        yield services
    finally:
        services.close()


@pytest.fixture(autouse=True)
def _shared_services_wanted(request: pytest.FixtureRequest, shared_services: SharedServices) -> None:
    """Before a test: stop the shared processes it does not ask for."""
    shared_services.keep_only(kind for kind in SHARED_SERVICE_FIXTURES if kind in request.fixturenames)


@pytest.fixture
def celery_worker(
    transactional_db: None, redis_server: str, shared_services: SharedServices
) -> Iterator[CeleryWorker]:
    """A real Celery worker process on the test database and the test redis."""
    worker: CeleryWorker = shared_services.take("celery_worker", start_celery_worker)
    reusable = False
    try:
        yield worker
        try:
            reusable = nothing_in_flight()
        except Exception:  # noqa: BLE001 - a database a fault test broke: the worker is not handed on
            reusable = False
    finally:
        # Before the database is emptied (transactional_db's teardown comes after this one).
        shared_services.give_back("celery_worker", worker, reusable=reusable)


# --- tenancy: Alice's and Bob's organizations, the `api` client (tests/fixtures_tenancy.py) ---
from tests.fixtures_tenancy import *  # noqa: E402,F401,F403
