"""Bad uploads answer a clear 4xx JSON error and leave no row and no file behind."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from agents.errors import BundleTooLarge
from agents.models import Bundle, BundleVersion
from agents.uploads import CHUNK_BYTES, read_limited
from organizations.models import MIB, AuditLog
from tests.bundles import sample, stored_files, upload


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("lightfast.config.mjs", sample("weather.mjs"))
    return buffer.getvalue()


def assert_nothing_written(media_root: Path) -> None:
    assert Bundle.objects.count() == 0
    assert BundleVersion.objects.count() == 0
    assert not AuditLog.objects.filter(action__startswith="bundle.").exists()
    assert stored_files(media_root) == []


@pytest.mark.parametrize("multipart", [True, False], ids=["multipart", "raw"])
@pytest.mark.parametrize(
    ("data", "status", "error_type"),
    [
        (b"", 400, "invalid_bundle"),
        (b"  \n\t ", 400, "invalid_bundle"),
        (b"\xff\xfe garbage \x00\x01", 400, "invalid_bundle"),
        (bytes(range(256)) * 64, 400, "invalid_bundle"),
        (_zip_bytes(), 400, "invalid_bundle"),
        (
            (Path(__file__).parent.parent.parent.parent / "shared/bundles/hostile/not-utf8.mjs").read_bytes(),
            400,
            "invalid_bundle",
        ),
    ],
    ids=["empty", "whitespace", "binary-garbage", "all-bytes", "zip", "hostile-not-utf8"],
)
def test_bad_bytes_are_refused_without_writing(alice, api, media_root, multipart, data, status, error_type):
    response = upload(alice.keys["all"], data, multipart=multipart)
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["type"] == error_type
    assert error["message"]
    assert_nothing_written(media_root)


def test_non_utf8_error_names_the_byte_offset(alice, media_root):
    response = upload(alice.keys["all"], b"ok = 1;\n" + b"\xc3\x28")
    assert response.status_code == 400
    assert response.json()["error"]["detail"] == {"byte_offset": 8}


@pytest.mark.parametrize("multipart", [True, False], ids=["multipart", "raw"])
def test_eleven_megabytes_with_a_ten_megabyte_limit_is_413(alice, media_root, multipart):
    assert alice.organization.max_bundle_bytes == 10 * MIB
    data = b"// " + b"x" * (11 * 1000 * 1000) + b"\n"
    response = upload(alice.keys["all"], data, multipart=multipart)
    assert response.status_code == 413
    body = response.json()["error"]
    assert body["type"] == "payload_too_large"
    assert body["detail"]["limit_bytes"] == 10 * MIB
    assert_nothing_written(media_root)


def test_lowered_plan_limit_applies(alice, media_root):
    alice.organization.max_bundle_bytes = 1000
    alice.organization.save()
    response = upload(alice.keys["all"], b"// " + b"y" * 1200)
    assert response.status_code == 413
    assert response.json()["error"]["detail"]["limit_bytes"] == 1000
    assert_nothing_written(media_root)


class EndlessBody:
    """A request body that would produce 1 GB, counting what was read."""

    def __init__(self) -> None:
        self.read_bytes = 0
        self._chunks = (b"z" * CHUNK_BYTES for _ in range(1024 * 1024 * 1024 // CHUNK_BYTES))

    def read(self, size: int = -1) -> bytes:
        chunk = next(self._chunks, b"")[: size if size > 0 else None]
        self.read_bytes += len(chunk)
        return chunk


def test_streamed_body_stops_at_the_limit_without_reading_the_rest():
    body = EndlessBody()
    with pytest.raises(BundleTooLarge):
        read_limited(body, limit=10 * MIB)
    assert body.read_bytes <= 10 * MIB + CHUNK_BYTES


def test_zero_byte_multipart_file(alice, media_root):
    response = upload(alice.keys["all"], b"", filename="empty.mjs")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_bundle"
    assert_nothing_written(media_root)


def test_multipart_without_a_file(alice, api, media_root):
    from django.test import Client

    response = Client().post(
        "/api/v1/bundles", {"slug": "weather"}, headers={"Authorization": f"Bearer {alice.keys['all']}"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request"
    assert_nothing_written(media_root)


@pytest.mark.parametrize("multipart", [True, False], ids=["multipart", "raw"])
@pytest.mark.parametrize(
    "slug",
    [None, "", "Weather", "-weather", "we ather", "wéather", "a" * 65, "../etc"],
    ids=["missing", "empty", "uppercase", "leading-hyphen", "space", "non-ascii", "too-long", "path"],
)
def test_missing_or_invalid_slug(alice, media_root, multipart, slug):
    response = upload(alice.keys["all"], sample("weather.mjs"), slug=slug, multipart=multipart)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    assert error["detail"]["field"] == "slug"
    assert_nothing_written(media_root)


def test_wrong_content_type_is_415(alice, api, media_root):
    response = api.post(
        "/api/v1/bundles?slug=weather",
        body=sample("weather.mjs"),
        content_type="text/plain",
        key=alice.keys["all"],
    )
    assert response.status_code == 415
    assert response.json()["error"]["type"] == "unsupported_media_type"
    assert_nothing_written(media_root)


def test_read_scope_cannot_upload(alice, media_root):
    response = upload(alice.keys["read"], sample("weather.mjs"))
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_denied"
    assert_nothing_written(media_root)


def test_execute_scope_cannot_upload(alice, media_root):
    assert upload(alice.keys["execute"], sample("weather.mjs")).status_code == 403
    assert_nothing_written(media_root)


def test_no_credentials_is_401(db, media_root):
    from django.test import Client

    response = Client().post(
        "/api/v1/bundles?slug=weather", data=sample("weather.mjs"), content_type="application/javascript"
    )
    assert response.status_code == 401
    assert_nothing_written(media_root)
