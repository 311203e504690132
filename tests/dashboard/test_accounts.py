"""Sign-up, log-in (rate limited), log-out, password reset, invitations and switching organizations."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client

from dashboard.scoping import SESSION_ORGANIZATION
from organizations.models import AuditLog, Invitation, Membership, Organization, Role
from organizations.services import Actor, invitation_create
from tests.factories import TEST_PASSWORD, MembershipFactory, OrganizationFactory, UserFactory

pytestmark = pytest.mark.django_db

SIGNUP = "/accounts/signup/"
LOGIN = "/accounts/login/"


def signup(client: Client, **fields: str) -> Any:
    data = {"email": "ada@example.com", "password": "correct horse battery", "organization": "Engines Ltd"}
    data.update(fields)
    return client.post(SIGNUP, data)


def test_signing_up_creates_the_user_and_an_organization_they_own() -> None:
    client = Client()
    response = signup(client)
    assert response.status_code == 302 and response["Location"] == "/"
    user = get_user_model().objects.get(username="ada@example.com")
    membership = Membership.objects.select_related("organization").get(user=user)
    assert membership.role == Role.OWNER
    assert (membership.organization.name, membership.organization.slug) == ("Engines Ltd", "engines-ltd")
    assert client.session[SESSION_ORGANIZATION] == membership.organization.public_id
    assert AuditLog.objects.filter(action="organization.created", actor_label="ada@example.com").exists()
    overview = client.get("/")
    assert overview.status_code == 200 and b"Engines Ltd" in overview.content


def test_a_taken_slug_gets_a_suffix_and_sign_up_errors_show_next_to_their_fields() -> None:
    OrganizationFactory(slug="engines-ltd")
    assert signup(Client()).status_code == 302
    assert Organization.objects.filter(slug__startswith="engines-ltd-").count() == 1
    again = signup(Client(), email="ADA@example.com", password="short", organization="!!!")
    assert again.status_code == 200
    form = again.context["form"]
    assert "already exists" in form.errors["email"][0]
    assert form.errors["password"] and form.errors["organization"] == ["Use at least one letter or digit."]
    html = again.content.decode()
    assert 'id="id_email_error"' in html and 'aria-invalid="true"' in html
    assert get_user_model().objects.count() == 1


def test_log_in_with_email_in_any_case_and_log_out() -> None:
    user = MembershipFactory(user=UserFactory(username="grace@example.com")).user
    client = Client()
    page = client.get(LOGIN)
    assert b'<label for="id_username">Email</label>' in page.content
    assert b'<label for="id_password">Password</label>' in page.content
    wrong = client.post(LOGIN, {"username": "grace@example.com", "password": "nope"})
    assert wrong.status_code == 200 and "The email or password is not right." in wrong.content.decode()
    right = client.post(
        LOGIN, {"username": "Grace@Example.com", "password": TEST_PASSWORD, "next": "/settings/"}
    )
    assert right.status_code == 302 and right["Location"] == "/settings/"
    assert client.get("/").context["user"] == user
    assert client.get("/accounts/logout/").status_code == 405  # logging out is a POST
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_log_in_is_rate_limited_per_address_and_per_email(settings: Any) -> None:
    # An hour's window: a fixed minute window could roll over between the attempts (a flake seen in CI).
    settings.LIGHTFAST_LOGIN_RATE = "3/h"
    UserFactory(username="grace@example.com")
    client = Client()
    for _ in range(3):
        assert client.post(LOGIN, {"username": "grace@example.com", "password": "nope"}).status_code == 200
    limited = client.post(LOGIN, {"username": "grace@example.com", "password": TEST_PASSWORD})
    assert limited.status_code == 429 and limited["Retry-After"] == "60"
    assert "Too many sign-in attempts" in limited.content.decode()
    assert "_auth_user_id" not in client.session
    # The same email from another address is limited too.
    other = Client(REMOTE_ADDR="10.1.2.3").post(
        LOGIN, {"username": "GRACE@example.com", "password": TEST_PASSWORD}
    )
    assert other.status_code == 429


def test_forms_need_their_csrf_token() -> None:
    client = Client(enforce_csrf_checks=True)
    refused = client.post(LOGIN, {"username": "x@example.com", "password": "y"})
    assert refused.status_code == 403 and b"This form expired" in refused.content
    page = client.get(LOGIN)
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content)
    assert token is not None
    allowed = client.post(
        LOGIN, {"username": "x@example.com", "password": "y", "csrfmiddlewaretoken": token[1].decode()}
    )
    assert allowed.status_code == 200


def test_password_reset_mails_a_link_that_sets_a_new_password() -> None:
    UserFactory(username="grace@example.com")
    client = Client()
    sent = client.post("/accounts/password-reset/", {"email": "grace@example.com"})
    assert sent.status_code == 302 and sent["Location"] == "/accounts/password-reset/sent/"
    assert len(mail.outbox) == 1
    link = re.search(r"http://testserver(/accounts/reset/\S+/)", mail.outbox[0].body)
    assert link is not None
    form_page = client.get(link[1], follow=True)
    assert b"Choose a new password" in form_page.content
    done = client.post(
        form_page.redirect_chain[-1][0],
        {"new_password1": "a brand new passphrase", "new_password2": "a brand new passphrase"},
    )
    assert done.status_code == 302 and done["Location"] == "/accounts/reset/done/"
    assert client.login(username="grace@example.com", password="a brand new passphrase")
    # Unknown addresses get the same answer and no mail.
    assert client.post("/accounts/password-reset/", {"email": "nobody@example.com"}).status_code == 302
    assert len(mail.outbox) == 1


def test_an_invitation_link_is_accepted_once_by_signing_up(alice: Any) -> None:
    invitation, token = invitation_create(
        organization=alice.organization,
        role=Role.ADMIN,
        actor=Actor.for_user(alice.owner),
        inviter_role="owner",
    )
    client = Client()
    page = client.get(f"/accounts/invite/{token}/")
    assert page.status_code == 200 and b"Join Alice&#x27;s org" in page.content
    response = client.post(
        f"/accounts/invite/{token}/", {"email": "newcomer@example.com", "password": "a long passphrase"}
    )
    assert response.status_code == 302
    membership = Membership.objects.get(user__username="newcomer@example.com")
    assert (membership.organization, membership.role) == (alice.organization, Role.ADMIN)
    assert client.session[SESSION_ORGANIZATION] == alice.organization.public_id
    invitation.refresh_from_db()
    assert invitation.status == "accepted" and invitation.accepted_by == membership.user
    used = Client().get(f"/accounts/invite/{token}/")
    assert used.status_code == 404 and b"used already" in used.content
    assert Client().get("/accounts/invite/not-a-token/").status_code == 404


def test_a_signed_in_user_accepts_and_an_invitation_for_someone_else_is_refused(alice: Any, bob: Any) -> None:
    actor = Actor.for_user(alice.owner)
    _, token = invitation_create(
        organization=alice.organization, role=Role.VIEWER, actor=actor, inviter_role="owner"
    )
    _, for_carol = invitation_create(
        organization=alice.organization,
        role=Role.MEMBER,
        actor=actor,
        inviter_role="owner",
        email="carol@example.com",
    )
    client = Client()
    client.force_login(bob.owner)
    refused = client.post(f"/accounts/invite/{for_carol}/")
    assert refused.status_code == 200 and b"for carol@example.com" in refused.content
    accepted = client.post(f"/accounts/invite/{token}/")
    assert accepted.status_code == 302
    assert Membership.objects.get(user=bob.owner, organization=alice.organization).role == Role.VIEWER
    # Bob now belongs to two organizations; the invitation made Alice's current.
    assert client.get("/").context["organization"] == alice.organization


def test_admins_cannot_invite_owners(alice: Any) -> None:
    client = Client()
    client.force_login(alice.users[Role.ADMIN])
    response = client.post("/settings/invitations/", {"invitation-role": Role.OWNER})
    assert response.status_code == 200
    assert "Only owners" in response.context["invitation_form"].errors["role"][0]
    assert not Invitation.objects.exists()
