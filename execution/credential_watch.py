"""The watch that tells a live connection (websocket, SSE stream) when its credentials stop holding."""

from __future__ import annotations

import asyncio

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from organizations.tenancy import CredentialsRevoked, Tenant, tenant_recheck


class CredentialWatch:
    """Tells a live connection (websocket, SSE stream) when the credentials it was opened with stop holding.

    Whatever revokes a key, removes a member, changes a role or suspends an organization sends
    `credentials.changed` to the credential's `connections_group` once it commits (see
    `organizations.receivers`); a watch woken by it re-reads the database (`tenant_recheck`),
    so a forged or stale message closes nothing that still holds. A lost message is caught by
    the re-check every LIGHTFAST_CREDENTIAL_RECHECK_S, and a key's expiry by a re-check at
    that moment. Whoever holds the connection's channel calls `nudge` for such a message: the
    websocket consumer (its own channel joins the groups), an SSE stream (the channel of its run's
    events joins them too).
    """

    def __init__(self, tenant: Tenant) -> None:
        self.tenant = tenant
        self._nudged = asyncio.Event()

    def nudge(self) -> None:
        """Re-check now (a `credentials.changed` message arrived)."""
        self._nudged.set()

    async def revoked(self, *, checked: bool = False) -> CredentialsRevoked:
        """Wait until the credentials stop holding and say why.

        Checks once at once (join, then read), unless the caller re-read them after it joined the
        credential groups (`checked`: a chat start does, in the thread hop that starts its run).
        """
        if checked:
            await self._wait(self._delay())
        while True:
            try:
                await sync_to_async(tenant_recheck)(self.tenant)
            except CredentialsRevoked as exc:
                return exc
            await self._wait(self._delay())

    def _delay(self) -> float:
        interval = float(settings.LIGHTFAST_CREDENTIAL_RECHECK_S)
        expires_at = self.tenant.expires_at
        if expires_at is not None:
            until = (expires_at - timezone.now()).total_seconds()
            if until > 0:
                return min(interval, until + 0.01)
        return interval

    async def _wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._nudged.wait(), timeout)
        except TimeoutError:
            pass  # the periodic re-check
        self._nudged.clear()
