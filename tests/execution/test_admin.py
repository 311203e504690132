"""The runs admin: pages load, filters and search narrow the list, cancel needs a reason and is audited."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from execution.events import event_append_many
from execution.models import ChatSession, Run, RunStatus
from execution.services import run_start
from organizations.models import AuditLog
from tests.bundles import manifest_version

RUNS = "admin:execution_run_changelist"

# Not transactional: the runs started here are never sent to a broker (no worker is under test).
pytestmark = pytest.mark.django_db


@pytest.fixture
def runs(alice: Any, bob: Any) -> dict[str, Run]:
    """A queued and a failed run of Alice's, a queued run of Bob's on another agent."""
    version = manifest_version(alice.organization)
    bobs = manifest_version(bob.organization, slug="forecast")
    queued = run_start(
        organization=alice.organization, bundle_version=version, agent_key="weather", text="hello"
    )
    failed = run_start(
        organization=alice.organization, bundle_version=version, agent_key="weather", text="second message"
    )
    Run.objects.filter(pk=failed.pk).update(
        status=RunStatus.FAILED, error_type="tool_error", error_message="the tool threw"
    )
    event_append_many(failed, [("start", {"messageId": "m1"}), ("text-delta", {"id": "t", "delta": "<b>hi"})])
    other = run_start(organization=bob.organization, bundle_version=bobs, agent_key="weather", text="hey")
    # Searches match session ids too: random ones (`ses_` + 20 of [0-9a-z]) can hold "bob" by chance.
    for name, run in (("queued", queued), ("failed", failed), ("other", other)):
        ChatSession.objects.filter(runs=run).update(public_id=f"chat-{name}")
    return {"queued": queued, "failed": failed, "other": other}


def _listed(response: Any, runs: dict[str, Run]) -> set[str]:
    text = response.content.decode()
    assert response.status_code == 200
    return {name for name, run in runs.items() if str(run.pk) in text}


def test_run_and_session_pages_load_read_only(admin_client: Any, runs: dict[str, Run]) -> None:
    failed = runs["failed"]
    assert _listed(admin_client.get(reverse(RUNS)), runs) == {"queued", "failed", "other"}
    page = admin_client.get(reverse("admin:execution_run_change", args=[failed.pk]))
    text = page.content.decode()
    assert page.status_code == 200
    assert "the tool threw" in text and "text-delta" in text and "tool_error" in text
    assert "<b>hi" not in text  # event payloads are escaped
    assert 'name="status"' not in text  # nothing is editable
    assert admin_client.get(reverse("admin:execution_run_add")).status_code == 403
    session = failed.session
    assert session is not None
    assert admin_client.get(reverse("admin:execution_chatsession_changelist")).status_code == 200
    session_page = admin_client.get(reverse("admin:execution_chatsession_change", args=[session.pk]))
    assert session_page.status_code == 200
    assert "second message" in session_page.content.decode()  # the session's message parts
    assert "hello" not in session_page.content.decode()  # another session's
    assert admin_client.get(reverse("admin:execution_chatsession_add")).status_code == 403


def test_filters_and_search(admin_client: Any, alice: Any, bob: Any, runs: dict[str, Run]) -> None:
    url = reverse(RUNS)
    assert _listed(admin_client.get(url, {"status__exact": "failed"}), runs) == {"failed"}
    assert _listed(admin_client.get(url, {"organization__id__exact": bob.organization.pk}), runs) == {"other"}
    assert _listed(admin_client.get(url, {"agent": "forecast/weather"}), runs) == {"other"}
    assert _listed(admin_client.get(url, {"error_type": "tool_error"}), runs) == {"failed"}
    assert _listed(admin_client.get(url, {"error_type": "-"}), runs) == {"queued", "other"}
    today = runs["queued"].created_at
    by_day = {"created_at__year": today.year, "created_at__month": today.month, "created_at__day": today.day}
    assert _listed(admin_client.get(url, by_day), runs) == {"queued", "failed", "other"}
    assert _listed(admin_client.get(url, {"q": "bob"}), runs) == {"other"}
    assert _listed(admin_client.get(url, {"q": str(runs["failed"].pk)}), runs) == {"failed"}


def test_cancel_action_needs_a_reason_and_audits_each_run(admin_client: Any, runs: dict[str, Run]) -> None:
    selected = [str(run.pk) for run in runs.values()]
    form = {"action": "cancel_runs", "_selected_action": selected, "index": 0}
    admin_client.post(reverse(RUNS), {**form, "reason": ""})
    assert Run.objects.filter(status=RunStatus.QUEUED).count() == 2  # no reason, nothing cancelled
    assert not AuditLog.objects.filter(action="run.cancelled").exists()

    response = admin_client.post(reverse(RUNS), {**form, "reason": "runaway loop"}, follow=True)
    assert "Cancelled 2 run(s) (1 had already ended)." in response.content.decode()
    for name in ("queued", "other"):
        run = runs[name]
        run.refresh_from_db()
        assert run.status == RunStatus.CANCELLED
        entry = AuditLog.objects.get(action="run.cancelled", target_id=str(run.pk))
        assert entry.reason == "runaway loop" and entry.actor_type == "operator"
        assert entry.organization_id == run.organization_id and entry.actor_label == "operator:admin"
    runs["failed"].refresh_from_db()
    assert runs["failed"].status == RunStatus.FAILED


def test_staff_without_the_change_permission_cannot_cancel(client: Any, runs: dict[str, Run]) -> None:
    from django.contrib.auth.models import Permission, User

    staff = User.objects.create_user("viewer", password="x", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_run"))
    client.force_login(staff)
    assert client.get(reverse(RUNS)).status_code == 200
    form = {"action": "cancel_runs", "_selected_action": [str(runs["queued"].pk)], "reason": "x", "index": 0}
    client.post(reverse(RUNS), form)
    runs["queued"].refresh_from_db()
    assert runs["queued"].status == RunStatus.QUEUED


def test_organization_page_lists_its_keys_bundles_and_recent_runs_only(
    admin_client: Any, alice: Any, runs: dict[str, Run]
) -> None:
    page = admin_client.get(reverse("admin:organizations_organization_change", args=[alice.organization.pk]))
    assert page.status_code == 200
    text = page.content.decode()
    assert alice.api_keys["read"].display_prefix in text
    assert reverse("admin:agents_bundle_change", args=[runs["queued"].bundle_version.bundle.pk]) in text
    assert reverse("admin:execution_run_change", args=[runs["failed"].pk]) in text
    assert reverse("admin:execution_run_change", args=[runs["other"].pk]) not in text, "Bob's run"
