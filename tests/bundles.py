"""Bundle helpers every test package shares: upload over REST, make a version ready, call its tools.

The `media_root` fixture these need (a media directory of the test's own) is in tests/conftest.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from agents.models import Bundle, BundleVersion, VersionStatus
from organizations.models import Organization
from tests.services import SHARED_BUNDLES

WEATHER = SHARED_BUNDLES / "weather.mjs"


def sample(name: str) -> bytes:
    """A sample bundle from ../shared/bundles (or hostile/NAME)."""
    return (SHARED_BUNDLES / name).read_bytes()


def stored_files(root: Path) -> list[str]:
    """Every file under the media directory, relative to it."""
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def upload(
    key: str,
    data: bytes,
    *,
    slug: str | None = "weather",
    multipart: bool = True,
    path: str = "/api/v1/bundles",
    params: dict[str, str] | None = None,
    filename: str = "bundle.mjs",
    extra_fields: dict[str, str] | None = None,
) -> Any:
    """Upload `data` as multipart (field `file`) or as a raw application/javascript body."""
    client = Client()
    headers = {"Authorization": f"Bearer {key}"}
    query = dict(params or {})
    if multipart:
        form: dict[str, Any] = {"file": SimpleUploadedFile(filename, data, content_type="text/javascript")}
        if slug is not None:
            form["slug"] = slug
        form.update(extra_fields or {})
        url = f"{path}?{urlencode(query)}" if query else path
        return client.post(url, form, headers=headers)
    if slug is not None and path == "/api/v1/bundles":
        query["slug"] = slug
    url = f"{path}?{urlencode(query)}" if query else path
    return client.post(url, data=data, content_type="application/javascript", headers=headers)


def uploaded_version(
    organization: Organization, path: Path = WEATHER, *, slug: str = "weather"
) -> BundleVersion:
    """A version uploaded and introspected through the agents services (or a live worker), ready to run."""
    from agents.services import bundle_upload, bundle_version_introspect
    from organizations.services import Actor

    result = bundle_upload(
        organization=organization, slug=slug, data=path.read_bytes(), actor=Actor.system("tests")
    )
    version = bundle_version_introspect(version_id=result.version.pk, organization_id=organization.pk)
    if version is None:
        # A live stack's Celery worker took the introspection task the upload enqueued at its commit
        # before this call: wait for its result instead.
        from agents.selectors import version_wait

        version = version_wait(version=result.version, timeout_s=30)
    version.refresh_from_db()
    assert version.status == VersionStatus.READY, (version.error_type, version.error_message)
    return version


def tool_invoke(api: Any, key: str, slug: str, tool: str, input: dict[str, Any]) -> dict[str, Any]:  # noqa: A002
    """Call a tool through the REST tool-invoke endpoint; returns the JSON answer (asserts a 200)."""
    response = api.post(f"/api/v1/bundles/{slug}/tools/{tool}/invoke", json={"input": input}, key=key)
    assert response.status_code == 200, response.content
    return dict(response.json())


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
    """A ready version with a given manifest, for tests that never reach the sandbox."""
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
