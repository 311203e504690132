"""Operators in the admin: readable manifest, quarantine action, download of the original file."""

from __future__ import annotations

from django.test import Client

from agents.models import Bundle, BundleVersion, VersionStatus
from agents.services import bundle_upload, bundle_version_finish_introspection
from organizations.models import AuditLog
from organizations.services import Actor
from tests.bundles import sample
from tests.factories import UserFactory


def _operator_client() -> Client:
    client = Client()
    client.force_login(UserFactory(username="ops@example.com", is_staff=True, is_superuser=True))
    return client


def test_manifest_quarantine_and_download(alice):
    data = sample("weather.mjs")
    version = bundle_upload(
        organization=alice.organization, slug="weather", data=data, actor=Actor.system("tests")
    ).version
    bundle_version_finish_introspection(
        version=version, manifest={"agents": {"weather": {"name": "weather"}}}
    )
    client = _operator_client()

    page = client.get(f"/admin/agents/bundleversion/{version.pk}/change/")
    assert page.status_code == 200
    assert "&quot;agents&quot;: {" in page.content.decode()

    download = client.get(f"/admin/agents/bundleversion/{version.pk}/download/")
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == data
    assert "attachment" in download["Content-Disposition"]

    response = client.post(
        "/admin/agents/bundleversion/", {"action": "quarantine", "_selected_action": [version.pk]}
    )
    assert response.status_code == 302
    version.refresh_from_db()
    assert version.status == VersionStatus.QUARANTINED
    assert Bundle.objects.get().active_version is None
    entry = AuditLog.objects.get(action="bundle.version_quarantined")
    assert entry.actor_label == "ops@example.com"

    client.post("/admin/agents/bundleversion/", {"action": "unquarantine", "_selected_action": [version.pk]})
    assert BundleVersion.objects.get().status == VersionStatus.READY


def test_staff_only(alice):
    version = bundle_upload(
        organization=alice.organization,
        slug="weather",
        data=sample("weather.mjs"),
        actor=Actor.system("tests"),
    ).version
    client = Client()
    client.force_login(alice.owner)
    assert client.get(f"/admin/agents/bundleversion/{version.pk}/download/").status_code == 302
