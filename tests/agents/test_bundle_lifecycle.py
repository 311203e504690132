"""Versions over their life: identical uploads, activation, rollback, quarantine, deletion, tenancy, cleanup.

Introspection results are recorded through `bundle_version_finish_introspection` here, so these tests
need no worker; tests/agents/test_introspection.py runs the real task in a Celery worker.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import TestCase

from agents.models import Bundle, BundleVersion, VersionStatus
from agents.services import (
    bundle_upload,
    bundle_version_finish_introspection,
    bundle_version_quarantine,
    bundle_version_unquarantine,
    bundle_versions_reap_stale,
)
from execution.sandbox.errors import SandboxError
from organizations.models import AuditLog
from organizations.services import Actor
from tests.bundles import sample, stored_files, upload

WEATHER = sample("weather.mjs")
MANIFEST = {
    "metadata": {"name": "weather-demo"},
    "agents": {
        "weather": {
            "name": "weather",
            "tools": {
                "getWeather": {"description": "d", "inputSchema": {"type": "object"}, "outputSchema": None}
            },
        }
    },
    "warnings": [],
}


def variant(n: int) -> bytes:
    """The weather sample with a different comment: new bytes, same behaviour."""
    return WEATHER + f"\n// build {n}\n".encode()


def make_ready(version: BundleVersion) -> BundleVersion:
    return bundle_version_finish_introspection(version=version, manifest=MANIFEST)


def actor() -> Actor:
    return Actor.system("tests")


def test_upload_stores_files_and_queues_validation(alice, media_root):
    response = upload(alice.keys["write"], WEATHER, slug="weather")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["created"] is True
    assert body["version"]["status"] == "validating"
    assert body["version"]["number"] == 1
    assert body["bundle"]["slug"] == "weather"
    assert response["Location"] == "/api/v1/bundles/weather/versions/1"
    version = BundleVersion.objects.get()
    assert version.original_file.read() == WEATHER
    assert version.size_bytes == len(WEATHER)
    files = stored_files(media_root)
    assert len(files) == 3 and all(f.startswith(f"bundles/{alice.organization.public_id}/") for f in files)
    assert "require(" in version.script_file.read().decode()
    assert (
        AuditLog.objects.filter(action="bundle.version_uploaded", organization=alice.organization).count()
        == 1
    )


def test_raw_body_upload_and_identical_bytes_return_the_existing_version(alice, media_root):
    first = upload(alice.keys["write"], WEATHER, multipart=False)
    assert first.status_code == 201
    again = upload(alice.keys["write"], WEATHER, multipart=True)
    assert again.status_code == 200
    assert again.json()["created"] is False
    assert again.json()["version"]["number"] == 1
    assert BundleVersion.objects.count() == 1
    assert len(stored_files(media_root)) == 3


def test_syntax_error_answers_at_once_with_line_and_column(alice, media_root):
    response = upload(alice.keys["write"], sample("hostile/syntax-error.mjs"))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "syntax_error"
    assert error["detail"]["line"] == 3
    assert error["detail"]["column"] > 0
    assert BundleVersion.objects.count() == 0 and Bundle.objects.count() == 0
    assert stored_files(media_root) == []


def test_node_builtin_import_is_rejected_naming_it(alice, media_root):
    response = upload(alice.keys["write"], sample("hostile/node-builtins.mjs"))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_bundle"
    assert "fs" in error["message"] or "child_process" in error["message"]
    assert stored_files(media_root) == []


def test_ready_version_becomes_active_unless_told_otherwise(alice):
    v1 = bundle_upload(
        organization=alice.organization, slug="weather", data=variant(1), actor=actor()
    ).version
    make_ready(v1)
    assert Bundle.objects.get().active_version == v1
    v2 = bundle_upload(
        organization=alice.organization, slug="weather", data=variant(2), actor=actor(), activate=False
    ).version
    make_ready(v2)
    assert Bundle.objects.get().active_version == v1


def test_activate_false_over_http(alice):
    response = upload(alice.keys["write"], variant(1), params={"activate": "false"})
    assert response.status_code == 201
    make_ready(BundleVersion.objects.get())
    assert Bundle.objects.get().active_version is None


def test_an_older_version_finishing_late_does_not_replace_a_newer_active_one(alice):
    v1 = bundle_upload(
        organization=alice.organization, slug="weather", data=variant(1), actor=actor()
    ).version
    v2 = bundle_upload(
        organization=alice.organization, slug="weather", data=variant(2), actor=actor()
    ).version
    make_ready(v2)
    make_ready(v1)
    assert Bundle.objects.get().active_version == v2


def test_rollback_is_one_call(alice, api):
    versions = []
    for n in range(3):
        version = bundle_upload(
            organization=alice.organization, slug="weather", data=variant(n), actor=actor()
        ).version
        versions.append(make_ready(version))
    assert Bundle.objects.get().active_version.number == 3
    response = api.post("/api/v1/bundles/weather/rollback", key=alice.keys["write"])
    assert response.status_code == 200, response.content
    assert response.json()["active_version"] == 2
    response = api.post("/api/v1/bundles/weather/rollback", json={"version": 1}, key=alice.keys["write"])
    assert response.json()["active_version"] == 1
    response = api.post("/api/v1/bundles/weather/rollback", key=alice.keys["write"])
    assert response.status_code == 409
    assert response.json()["error"]["type"] == "version_not_runnable"
    response = api.post("/api/v1/bundles/weather/versions/3/activate", key=alice.keys["write"])
    assert response.json()["active_version"] == 3
    assert api.post("/api/v1/bundles/weather/rollback", key=alice.keys["read"]).status_code == 403


def test_rejected_version_cannot_be_activated_or_run(alice, api):
    version = bundle_upload(
        organization=alice.organization, slug="weather", data=variant(1), actor=actor()
    ).version
    bundle_version_finish_introspection(version=version, error=SandboxError("timeout", "too slow", {}))
    response = api.get("/api/v1/bundles/weather/versions/1", key=alice.keys["read"])
    assert response.json()["status"] == "rejected"
    assert response.json()["error"] == {"type": "timeout", "message": "too slow", "detail": {}}
    response = api.post("/api/v1/bundles/weather/versions/1/activate", key=alice.keys["write"])
    assert response.status_code == 409
    response = api.post(
        "/api/v1/bundles/weather/tools/getWeather/invoke",
        json={"input": {"city": "Oslo"}},
        key=alice.keys["execute"],
    )
    assert response.status_code == 409
    assert response.json()["error"]["type"] == "version_not_runnable"


def test_quarantine_stops_running_and_activation(alice, api):
    version = make_ready(
        bundle_upload(organization=alice.organization, slug="weather", data=variant(1), actor=actor()).version
    )
    bundle_version_quarantine(version=version, actor=Actor.operator("ops"), reason="reported as malicious")
    assert Bundle.objects.get().active_version is None
    assert api.get("/api/v1/agents", key=alice.keys["read"]).json()["results"] == []
    response = api.post(
        "/api/v1/bundles/weather/tools/getWeather/invoke", json={"input": {}}, key=alice.keys["execute"]
    )
    assert response.status_code == 409
    assert api.post("/api/v1/bundles/weather/versions/1/activate", key=alice.keys["write"]).status_code == 409
    assert (
        api.get("/api/v1/bundles/weather/versions/1", key=alice.keys["read"]).json()["status"]
        == "quarantined"
    )
    released = bundle_version_unquarantine(version=version, actor=Actor.operator("ops"))
    assert released.status == VersionStatus.READY
    assert api.post("/api/v1/bundles/weather/versions/1/activate", key=alice.keys["write"]).status_code == 200
    actions = set(AuditLog.objects.filter(organization=alice.organization).values_list("action", flat=True))
    assert {"bundle.version_quarantined", "bundle.version_unquarantined"} <= actions


def test_delete_removes_files_and_keeps_version_records(alice, api, media_root):
    for n in range(2):
        make_ready(
            bundle_upload(
                organization=alice.organization, slug="weather", data=variant(n), actor=actor()
            ).version
        )
    assert len(stored_files(media_root)) == 6
    assert api.delete("/api/v1/bundles/weather", key=alice.keys["read"]).status_code == 403
    bundle = Bundle.objects.get()
    # Files are removed on commit; the test transaction never commits, so run the callbacks.
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = api.delete("/api/v1/bundles/weather", key=alice.keys["write"])
    assert response.status_code == 204
    assert stored_files(media_root) == []
    bundle.refresh_from_db()
    assert bundle.deleted_at is not None
    assert BundleVersion.objects.filter(bundle=bundle).count() == 2
    assert api.get("/api/v1/bundles/weather", key=alice.keys["read"]).status_code == 404
    # The slug is free again.
    assert upload(alice.keys["write"], variant(9)).status_code == 201


def test_failed_commit_leaves_no_row_and_no_file(alice, media_root):
    if connection.vendor != "sqlite":
        pytest.skip(reason="the failure is injected with a SQLite trigger")
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TRIGGER fail_upload BEFORE INSERT ON organizations_auditlog "
            "WHEN NEW.action = 'bundle.version_uploaded' BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
    try:
        with pytest.raises(Exception, match="injected failure"):
            bundle_upload(organization=alice.organization, slug="weather", data=WEATHER, actor=actor())
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER fail_upload")
    assert BundleVersion.objects.count() == 0
    assert Bundle.objects.count() == 0
    assert stored_files(media_root) == []


def test_storage_quota(alice, media_root):
    alice.organization.bundle_storage_bytes = len(WEATHER) + 100
    alice.organization.save()
    assert upload(alice.keys["write"], variant(1)).status_code == 201
    response = upload(alice.keys["write"], variant(2))
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "quota_exceeded"
    assert BundleVersion.objects.count() == 1
    assert len(stored_files(media_root)) == 3


def test_reaper_rejects_an_introspection_that_crashed_too_often(alice):
    from datetime import timedelta

    from django.utils import timezone

    version = bundle_upload(
        organization=alice.organization, slug="weather", data=WEATHER, actor=actor()
    ).version
    BundleVersion.objects.filter(pk=version.pk).update(
        introspect_attempts=3, introspect_started_at=timezone.now() - timedelta(minutes=10)
    )
    assert bundle_versions_reap_stale() == 1
    version.refresh_from_db()
    assert version.status == VersionStatus.REJECTED
    assert version.error_type == "timeout"


def test_version_wait_returns_at_once_for_a_finished_version(alice, api):
    make_ready(
        bundle_upload(organization=alice.organization, slug="weather", data=WEATHER, actor=actor()).version
    )
    response = api.get("/api/v1/bundles/weather/versions/1?wait=10", key=alice.keys["read"])
    assert response.status_code == 200
    assert response.json()["status"] == "ready"
    assert response.json()["manifest"] == MANIFEST
    assert api.get("/api/v1/bundles/weather/versions/1?wait=soon", key=alice.keys["read"]).status_code == 400


def test_agents_list(alice, bob, api):
    make_ready(
        bundle_upload(organization=alice.organization, slug="weather", data=WEATHER, actor=actor()).version
    )
    results = api.get("/api/v1/agents", key=alice.keys["read"]).json()["results"]
    assert [agent["id"] for agent in results] == ["weather/weather"]
    assert results[0]["tools"]["getWeather"]["inputSchema"] == {"type": "object"}
    assert api.get("/api/v1/agents", key=bob.keys["read"]).json()["results"] == []


ROUTES = [
    ("get", "/api/v1/bundles/weather", None),
    ("delete", "/api/v1/bundles/weather", None),
    ("get", "/api/v1/bundles/weather/versions", None),
    ("get", "/api/v1/bundles/weather/versions/1", None),
    ("get", "/api/v1/bundles/weather/versions/1?wait=1", None),
    ("post", "/api/v1/bundles/weather/versions/1/activate", None),
    ("post", "/api/v1/bundles/weather/rollback", {"version": 1}),
    ("post", "/api/v1/bundles/weather/tools/getWeather/invoke", {"input": {"city": "Oslo"}}),
]


@pytest.mark.parametrize(("method", "path", "json_body"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_another_organization_gets_404_on_every_route(alice, bob, api, media_root, method, path, json_body):
    make_ready(
        bundle_upload(organization=alice.organization, slug="weather", data=WEATHER, actor=actor()).version
    )
    kwargs = {"key": bob.keys["all"]}
    if json_body is not None:
        kwargs["json"] = json_body
    response = getattr(api, method)(path, **kwargs)
    assert response.status_code == 404, response.content
    assert response.json()["error"]["type"] == "not_found"
    # Bob's session user too.
    response = getattr(api, method)(path, user=bob.owner, **({"json": json_body} if json_body else {}))
    assert response.status_code == 404
    assert Bundle.objects.get().deleted_at is None


def test_another_organization_cannot_upload_a_version_into_alice_bundle(alice, bob, media_root):
    make_ready(
        bundle_upload(organization=alice.organization, slug="weather", data=WEATHER, actor=actor()).version
    )
    response = upload(bob.keys["all"], variant(5), path="/api/v1/bundles/weather/versions", slug=None)
    assert response.status_code == 404
    # Bob's own upload under the same slug is a separate bundle of his.
    assert upload(bob.keys["all"], variant(5)).status_code == 201
    assert BundleVersion.objects.filter(organization=alice.organization).count() == 1


def test_read_scope_cannot_invoke(alice, api):
    make_ready(
        bundle_upload(organization=alice.organization, slug="weather", data=WEATHER, actor=actor()).version
    )
    response = api.post(
        "/api/v1/bundles/weather/tools/getWeather/invoke",
        json={"input": {"city": "Oslo"}},
        key=alice.keys["read"],
    )
    assert response.status_code == 403
    response = api.post(
        "/api/v1/bundles/weather/tools/getWeather/invoke",
        json={"input": {"city": "Oslo"}},
        key=alice.keys["write"],
    )
    assert response.status_code == 403


def test_unknown_tool_and_agent_are_404(alice, api):
    make_ready(
        bundle_upload(organization=alice.organization, slug="weather", data=WEATHER, actor=actor()).version
    )
    response = api.post("/api/v1/bundles/weather/tools/nope/invoke", json={}, key=alice.keys["execute"])
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "unknown_tool"
    response = api.post(
        "/api/v1/bundles/weather/tools/getWeather/invoke", json={"agent": "nobody"}, key=alice.keys["execute"]
    )
    assert response.status_code == 404
    response = api.post(
        "/api/v1/bundles/weather/tools/getWeather/invoke", json={"inputs": {}}, key=alice.keys["execute"]
    )
    assert response.status_code == 400
