"""Every dashboard page is scoped to the session's organization: login first, members only, another
organization's objects are 404, roles limit writes."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from dashboard.scoping import SESSION_ORGANIZATION, OrganizationPageMixin
from organizations.models import ApiKey, Membership, Role
from organizations.services import Actor, org_create

pytestmark = pytest.mark.django_db


def signed_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("path", ["/", "/settings/"])
def test_anonymous_visitors_go_to_the_login_page(path: str) -> None:
    response = Client().get(path)
    assert response.status_code == 302 and response["Location"] == f"/accounts/login/?next={path}"


def test_an_htmx_fragment_of_an_ended_session_sends_the_page_to_log_in() -> None:
    response = Client().get(
        "/overview/runs/", headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/"}
    )
    assert response.status_code == 204 and response["HX-Redirect"] == "/accounts/login/?next=/"


def test_another_organizations_objects_are_404_and_change_nothing(alice: Any, bob: Any) -> None:
    alice_key = alice.api_keys["all"]
    client = signed_in(bob.owner)
    assert client.post(f"/settings/api-keys/{alice_key.lookup_id}/revoke/").status_code == 404
    alice_member = Membership.objects.get(organization=alice.organization, role=Role.MEMBER)
    assert client.post(f"/settings/members/{alice_member.pk}/remove/").status_code == 404
    assert (
        client.post(
            f"/settings/members/{alice_member.pk}/role/", {f"member-{alice_member.pk}-role": "viewer"}
        ).status_code
        == 404
    )
    alice_key.refresh_from_db()
    assert alice_key.revoked_at is None
    assert Membership.objects.filter(pk=alice_member.pk, role=Role.MEMBER).exists()
    # The 404 page is the dashboard's, not the API's JSON.
    missing = client.get("/no/such/page/")
    assert missing.status_code == 404 and missing["Content-Type"].startswith("text/html")
    assert b"Not found" in missing.content


def test_members_switch_between_their_organizations_only(alice: Any, bob: Any) -> None:
    second = org_create(
        slug="alice-labs", name="Alice Labs", owner=alice.owner, actor=Actor.for_user(alice.owner)
    )
    client = signed_in(alice.owner)
    assert client.get("/").context["organization"] == alice.organization  # the oldest membership first
    page = client.get("/").content.decode()
    assert "Alice Labs" in page and "Bob" not in page  # the switcher lists only her organizations
    switched = client.post("/organizations/switch/", {"organization": second.public_id, "next": "/settings/"})
    assert switched.status_code == 302 and switched["Location"] == "/settings/"
    assert client.get("/").context["organization"] == second
    refused = client.post("/organizations/switch/", {"organization": bob.organization.slug}, follow=True)
    assert b"not a member" in refused.content
    assert client.session[SESSION_ORGANIZATION] == second.public_id
    # Removed from the session's organization: back to one she still belongs to.
    Membership.objects.filter(user=alice.owner, organization=second).delete()
    assert client.get("/").context["organization"] == alice.organization


def test_a_user_without_an_organization_creates_one(alice: Any) -> None:
    orphan = alice.users[Role.VIEWER]
    Membership.objects.filter(user=orphan).delete()
    client = signed_in(orphan)
    assert client.get("/")["Location"] == "/organizations/new/"
    created = client.post("/organizations/new/", {"name": "Fresh Start"})
    assert created.status_code == 302
    assert Membership.objects.get(user=orphan).role == Role.OWNER


def test_a_suspended_organization_shows_why(alice: Any) -> None:
    alice.organization.is_active = False
    alice.organization.save()
    response = signed_in(alice.owner).get("/")
    assert response.status_code == 403 and b"is suspended" in response.content


def test_viewers_see_settings_but_cannot_change_them(alice: Any) -> None:
    client = signed_in(alice.users[Role.VIEWER])
    page = client.get("/settings/")
    assert page.status_code == 200 and b"Key name" not in page.content
    refused = client.post("/settings/api-keys/", {"apikey-name": "sneaky", "apikey-scopes": ["read"]})
    assert refused.status_code == 403
    assert not ApiKey.objects.filter(name="sneaky").exists()


def test_a_page_that_redefines_the_scoped_lookups_is_refused_at_class_creation() -> None:
    from django.views.generic import TemplateView

    with pytest.raises(TypeError, match="scoped"):

        class Leaky(OrganizationPageMixin, TemplateView):
            def scoped(self, source: Any) -> Any:
                return source.objects.all()


def test_dashboard_pages_carry_a_content_security_policy(alice: Any) -> None:
    policy = signed_in(alice.owner).get("/")["Content-Security-Policy"]
    assert (
        "script-src 'self'" in policy and "style-src 'self'" in policy and "frame-ancestors 'none'" in policy
    )
