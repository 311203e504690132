"""Fixtures for run tests: the fake OpenAI-compatible server and provider settings."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

# Defined in tests/bundles.py; importable from here for tests written before they moved.
from tests.bundles import WEATHER, manifest_version, uploaded_version, weather_manifest  # noqa: F401
from tests.execution.fake_openai import FakeOpenAI


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAI]:
    """One local OpenAI-compatible server for the whole session."""
    server = FakeOpenAI().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def use_fake_provider(settings: Any, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    """Route bundle models to the fake server, in this process and in workers started afterwards."""
    values = {
        "LIGHTFAST_MODEL_BASE_URL": fake_openai.base_url,
        "LIGHTFAST_MODEL_API_KEY": "sk-test-platform-key",
        "LIGHTFAST_MODEL_MAX_RETRIES": 2,
        "LIGHTFAST_MODEL_RETRY_BACKOFF_S": 0.01,
        "LIGHTFAST_MODEL_TIMEOUT_S": 5.0,
    }
    for name, value in values.items():
        setattr(settings, name, value)
        monkeypatch.setenv(name, str(value))
    return fake_openai
