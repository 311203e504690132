"""Fixtures for the bundles tests: a private media directory, upload helpers, sample bundle files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from tests.services import SHARED_BUNDLES

SAMPLES = SHARED_BUNDLES
HOSTILE = SHARED_BUNDLES / "hostile"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "bundles"


@pytest.fixture(autouse=True)
def media_root(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A media directory of this test's own, also for the Celery worker the test may start."""
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = str(root)
    # The worker process reads its settings from the environment (tests/services.py copies os.environ).
    monkeypatch.setenv("LIGHTFAST_MEDIA_ROOT", str(root))
    yield root


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


def sample(name: str) -> bytes:
    """A sample bundle from ../shared/bundles (or hostile/NAME)."""
    return (SHARED_BUNDLES / name).read_bytes()
