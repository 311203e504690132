"""Websocket URL patterns of runs and the websocket application that serves them."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from channels.routing import URLRouter
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.contrib import auth
from django.urls import URLPattern, path
from django.utils.functional import SimpleLazyObject

from execution.consumers import ChatConsumer, TransportBacklogMiddleware

websocket_urlpatterns: list[URLPattern] = [
    path("ws/v1/chat/<str:bundle>/<str:agent>/", ChatConsumer.as_asgi(), name="ws-chat"),  # type: ignore[arg-type]
]


class LazySessionUserMiddleware:
    """`scope["user"]`: the session's user, read only when first used (by `ws_auth`, in a thread).

    Channels' AuthMiddleware reads it for every connection before the consumer starts, one more
    trip to the thread-sensitive thread each time; most connections authenticate with a key or a
    ticket and never need it.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        session = scope.get("session")
        user = SimpleLazyObject(lambda: auth.get_user(SimpleNamespace(session=session)))  # type: ignore[arg-type]
        return await self.app(dict(scope, user=user), receive, send)


def websocket_application(patterns: list[Any]) -> Any:
    """The websocket stack: transport probe, session user (origin-checked in the consumer), routes.

    Origins are checked per credential in `execution.ws_auth` rather than for every connection:
    programs holding an API key or a ticket send no `Origin`, and only cookie sessions need it.
    """
    return TransportBacklogMiddleware(
        CookieMiddleware(SessionMiddleware(LazySessionUserMiddleware(URLRouter(patterns))))
    )
