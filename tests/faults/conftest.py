"""One stack for the fault experiments of a module: the launcher on the test database and redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from tests.execution.fake_openai import FakeOpenAI
from tests.faults.stack import Stack, start_stack

# Fast clocks: a lost worker is noticed within seconds, a lost task re-sent within seconds.
STACK_ENV = {
    "LIGHTFAST_WORKER_PROCESSES": "1",
    "LIGHTFAST_WORKER_THREADS": "16",
    "LIGHTFAST_SANDBOX_WORKERS": "1",
    "LIGHTFAST_RUN_HEARTBEAT_S": "0.5",
    "LIGHTFAST_RUN_STALE_S": "5",
    "LIGHTFAST_RUN_REAP_INTERVAL_S": "1",
    "LIGHTFAST_RUN_REQUEUE_S": "3",
    "LIGHTFAST_WORKER_STATUS_EVERY_S": "1",
    "LIGHTFAST_AUTH_FAILURE_RATE": "100000/m",
    "LIGHTFAST_MODEL_API_KEY": "sk-test-platform-key",
    "LIGHTFAST_MODEL_TIMEOUT_S": "30",
    "LIGHTFAST_MODEL_MAX_RETRIES": "0",
}


@pytest.fixture(scope="package")
def fault_media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fault-media")


@pytest.fixture(scope="module")
def stack(
    django_db_setup: None, redis_server: str, tmp_path_factory: pytest.TempPathFactory, fault_media: Path
) -> Iterator[Stack]:
    """The launcher's whole stack, started once per module (each experiment leaves it healthy; it is gone
    before the next module, whose processes must be the only ones taking runs)."""
    fake = FakeOpenAI().start()
    root = tmp_path_factory.mktemp("fault-stack")
    stack = start_stack(
        data_dir=root / "data",
        media_root=fault_media,
        secret_key=str(django_settings.SECRET_KEY),
        redis_url=str(django_settings.REDIS_URL),
        env={**STACK_ENV, "LIGHTFAST_MODEL_BASE_URL": fake.base_url},
    )
    try:
        stack.wait_healthy(timeout=120)
        yield stack
    finally:
        stack.stop()
        fake.stop()


@pytest.fixture(autouse=True)
def _fault_media(settings: Any, fault_media: Path) -> None:
    """Bundles the tests upload land where the stack reads them."""
    settings.MEDIA_ROOT = str(fault_media)
