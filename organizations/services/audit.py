"""Who acts (`Actor`), the audit log entry every write records, and the signal that makes live
connections re-check their credentials."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import models, transaction
from django.dispatch import Signal

if TYPE_CHECKING:
    from django.contrib.auth.models import User

from organizations.models import (
    ActorType,
    ApiKey,
    AuditLog,
    Organization,
)


@dataclass(frozen=True)
class Actor:
    """Who performs an action, as recorded in the audit log."""

    type: str
    label: str
    user: Any = None
    api_key: ApiKey | None = None

    @classmethod
    def for_user(cls, user: User) -> Actor:
        """A signed-in person (dashboard, admin)."""
        return cls(type=ActorType.USER, label=user.get_username(), user=user)

    @classmethod
    def for_api_key(cls, api_key: ApiKey) -> Actor:
        """A program holding an API key."""
        return cls(type=ActorType.API_KEY, label=api_key.display_prefix, api_key=api_key)

    @classmethod
    def operator(cls, label: str = "operator", user: User | None = None) -> Actor:
        """A platform operator (command line or admin)."""
        return cls(type=ActorType.OPERATOR, label=label, user=user)

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        """The platform itself (launcher, periodic tasks)."""
        return cls(type=ActorType.SYSTEM, label=label)


def audit_record(
    *,
    actor: Actor,
    action: str,
    organization: Organization | None,
    target: models.Model | None = None,
    target_type: str = "",
    target_id: str = "",
    reason: str = "",
    metadata: dict[str, Any] | None = None,
) -> AuditLog:
    """Append one audit log entry; `target` fills target type and id from a model instance."""
    if target is not None:
        target_type = target_type or target._meta.model_name or ""
        target_id = target_id or str(
            getattr(target, "public_id", None) or getattr(target, "lookup_id", None) or target.pk
        )
    return AuditLog.objects.create(
        organization=organization,
        actor_type=actor.type,
        actor_user=actor.user,
        actor_api_key=actor.api_key,
        actor_label=actor.label[:200],
        action=action,
        target_type=target_type,
        target_id=target_id[:64],
        reason=reason,
        metadata=metadata or {},
    )


# Sent once the transaction commits, with `groups`: the channel-layer groups (`connections_group` of
# an API key, membership or organization) whose live connections must re-check their credentials.
# The runs app publishes it (execution/receivers.py); organizations does not talk to the layer.
credentials_changed = Signal()


def credentials_changed_on_commit(*, groups: Iterable[str]) -> None:
    """Tell the live connections of `groups` to re-check their credentials once this transaction commits."""
    names = sorted(set(groups))
    if names:
        transaction.on_commit(lambda: credentials_changed.send(sender=None, groups=names))
