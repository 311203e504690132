"""Websocket URL patterns of runs and the websocket application that serves them."""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddleware
from channels.routing import URLRouter
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.urls import URLPattern, path

from execution.consumers import ChatConsumer, TransportBacklogMiddleware

websocket_urlpatterns: list[URLPattern] = [
    path("ws/v1/chat/<str:bundle>/<str:agent>/", ChatConsumer.as_asgi(), name="ws-chat"),  # type: ignore[arg-type]
]


class SessionUserMiddleware:
    """`scope["session"]` and `scope["user"]` when the connection carries a session cookie, else anonymous.

    Channels' SessionMiddleware and AuthMiddleware each take a trip to the thread-sensitive thread
    for every connection; most connections authenticate with a key or a ticket and send no session
    cookie, so for them both are skipped.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.with_session = SessionMiddleware(AuthMiddleware(app))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if settings.SESSION_COOKIE_NAME in (scope.get("cookies") or {}):
            return await self.with_session(scope, receive, send)
        return await self.app(dict(scope, user=AnonymousUser()), receive, send)


def websocket_application(patterns: list[Any]) -> Any:
    """The websocket stack: transport probe, session user (origin-checked in the consumer), routes.

    Origins are checked per credential in `execution.ws_auth` rather than for every connection:
    programs holding an API key or a ticket send no `Origin`, and only cookie sessions need it.
    """
    return TransportBacklogMiddleware(CookieMiddleware(SessionUserMiddleware(URLRouter(patterns))))
