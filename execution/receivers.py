"""Signal receivers of the runs app: runs react to their bundle versions, connections to their credentials."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from agents.models import BundleVersion
from agents.services import bundle_version_quarantined
from execution.models import Run
from execution.publisher import credentials_changed_notify
from organizations.operations import org_cancel_runs
from organizations.quotas import ACTIVE_RUN_STATUSES
from organizations.services import Actor, credentials_changed


@receiver(bundle_version_quarantined, dispatch_uid="execution.cancel_runs_of_quarantined_version")
def cancel_runs_of_quarantined_version(sender: Any, *, version: BundleVersion, **kwargs: Any) -> int:
    """Cancel the queued and running runs on a version that was just quarantined; each one is audited."""
    run_ids = list(
        Run.objects.filter(bundle_version=version, status__in=ACTIVE_RUN_STATUSES).values_list(
            "pk", flat=True
        )
    )
    if not run_ids:
        return 0
    actor = kwargs.get("actor") or Actor.system("quarantine")
    why = str(kwargs.get("reason") or "").strip()
    reason = f"bundle version {version.bundle.slug} v{version.number} quarantined" + (
        f": {why}" if why else ""
    )
    # org_cancel_runs goes through run_cancel: a queued run ends now, a running one within a second.
    return org_cancel_runs(organization=version.organization, actor=actor, reason=reason, run_ids=run_ids)


@receiver(credentials_changed, dispatch_uid="execution.notify_connections_of_changed_credentials")
def notify_connections_of_changed_credentials(sender: Any, *, groups: list[str], **kwargs: Any) -> None:
    """Websockets and SSE streams of these credential groups re-check them now (and close if revoked)."""
    credentials_changed_notify(groups)
