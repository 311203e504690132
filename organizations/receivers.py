"""Signal receivers of tenancy: a credential that stops holding tells its live connections."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from organizations.models import ApiKey, Membership, Organization
from organizations.services import credentials_changed_on_commit


@receiver(post_save, sender=ApiKey, dispatch_uid="organizations.apikey_saved")
def apikey_saved(sender: Any, instance: ApiKey, created: bool, **kwargs: Any) -> None:
    """A key saved revoked or expired (e.g. expires_at moved to the past)."""
    if not created and (instance.revoked_at is not None or instance.is_expired()):
        credentials_changed_on_commit(groups=[instance.connections_group])


@receiver(post_delete, sender=ApiKey, dispatch_uid="organizations.apikey_deleted")
def apikey_deleted(sender: Any, instance: ApiKey, **kwargs: Any) -> None:
    """A deleted key (also through its organization's deletion)."""
    credentials_changed_on_commit(groups=[instance.connections_group])


@receiver(post_save, sender=Membership, dispatch_uid="organizations.membership_saved")
def membership_saved(sender: Any, instance: Membership, created: bool, **kwargs: Any) -> None:
    """A changed role: connections opened with the old role's scopes close (the client reconnects)."""
    if not created:
        credentials_changed_on_commit(groups=[instance.connections_group])


@receiver(post_delete, sender=Membership, dispatch_uid="organizations.membership_deleted")
def membership_deleted(sender: Any, instance: Membership, **kwargs: Any) -> None:
    """A removed member (the service, the admin, or the user's or organization's deletion)."""
    credentials_changed_on_commit(groups=[instance.connections_group])


@receiver(post_save, sender=Organization, dispatch_uid="organizations.organization_saved")
def organization_saved(sender: Any, instance: Organization, created: bool, **kwargs: Any) -> None:
    """An organization saved suspended (the admin form)."""
    if not created and not instance.is_active:
        credentials_changed_on_commit(groups=[instance.connections_group])


@receiver(post_delete, sender=Organization, dispatch_uid="organizations.organization_deleted")
def organization_deleted(sender: Any, instance: Organization, **kwargs: Any) -> None:
    """A deleted organization."""
    credentials_changed_on_commit(groups=[instance.connections_group])


def _user_groups(user: Any) -> list[str]:
    return [m.connections_group for m in Membership.objects.filter(user=user).only("pk")]


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="organizations.user_saved")
def user_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    """A deactivated user or a changed password: the sessions of every membership of theirs re-check.

    Any save of a user re-checks (a model signal cannot tell a new password from other fields); a
    re-check that finds the session still valid closes nothing.
    """
    if created or kwargs.get("update_fields") == frozenset({"last_login"}):
        return  # a sign-in stamping last_login changes no credential
    credentials_changed_on_commit(groups=_user_groups(instance))


@receiver(user_logged_out, dispatch_uid="organizations.user_logged_out")
def user_logged_out_closes_sessions(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """A signed-out dashboard session: what it opened closes (its session no longer exists)."""
    if user is not None:
        credentials_changed_on_commit(groups=_user_groups(user))
