"""Fixtures for run tests: the fake OpenAI-compatible server, provider settings, ready bundle versions."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.models import Bundle, BundleVersion, VersionStatus
from organizations.models import Organization
from tests.execution.fake_openai import FakeOpenAI
from tests.services import SHARED_BUNDLES

WEATHER = SHARED_BUNDLES / "weather.mjs"


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAI]:
    """One local OpenAI-compatible server for the whole session."""
    server = FakeOpenAI().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def media_root(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A media directory of this test's own, also for a Celery worker the test starts."""
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = str(root)
    monkeypatch.setenv("LIGHTFAST_MEDIA_ROOT", str(root))
    return root


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


def weather_manifest(model: Any = None) -> dict[str, Any]:
    """The manifest weather.mjs introspects to (used where the sandbox is not under test)."""
    city = {"type": "string", "minLength": 1, "description": "City name, e.g. Paris"}
    return {
        "metadata": {
            "name": "weather-demo",
            "version": "1.0.0",
            "description": "Weather agent with two tools",
        },
        "agents": {
            "weather": {
                "name": "weather",
                "system": "You are a concise weather assistant.",
                "model": model or {"provider": "gateway", "id": "openai/gpt-4o-mini"},
                "tools": {
                    "getWeather": {
                        "description": "Get the current weather for a city",
                        "inputSchema": {
                            "type": "object",
                            "properties": {
                                "city": city,
                                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                            },
                            "required": ["city"],
                        },
                        "outputSchema": None,
                    },
                },
                "dynamicTools": False,
                "options": {},
            }
        },
        "warnings": [],
    }


def manifest_version(
    organization: Organization,
    *,
    slug: str = "weather",
    manifest: dict[str, Any] | None = None,
    status: str = VersionStatus.READY,
) -> BundleVersion:
    """A ready version with a given manifest, for loop tests that never reach the sandbox."""
    bundle, _ = Bundle.objects.get_or_create(organization=organization, slug=slug)
    number = bundle.versions.count() + 1
    version = BundleVersion.objects.create(
        organization=organization,
        bundle=bundle,
        number=number,
        sha256=hashlib.sha256(f"{slug}{number}".encode()).hexdigest(),
        size_bytes=1,
        script_file=f"unused/{slug}-{number}.js",
        manifest=manifest or weather_manifest(),
        status=status,
    )
    bundle.active_version = version
    bundle.save(update_fields=["active_version"])
    return version


def uploaded_version(
    organization: Organization, path: Path = WEATHER, *, slug: str = "weather"
) -> BundleVersion:
    """A version uploaded and introspected through the agents services, ready to run in the sandbox."""
    from agents.services import bundle_upload, bundle_version_introspect
    from organizations.services import Actor

    result = bundle_upload(
        organization=organization, slug=slug, data=path.read_bytes(), actor=Actor.system("tests")
    )
    version = bundle_version_introspect(version_id=result.version.pk, organization_id=organization.pk)
    assert version is not None
    version.refresh_from_db()
    assert version.status == VersionStatus.READY, (version.error_type, version.error_message)
    return version
