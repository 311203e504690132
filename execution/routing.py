"""Websocket URL patterns of runs and the websocket application that serves them."""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from django.urls import URLPattern, path

from execution.consumers import ChatConsumer, TransportBacklogMiddleware

websocket_urlpatterns: list[URLPattern] = [
    path("ws/v1/chat/<str:bundle>/<str:agent>/", ChatConsumer.as_asgi(), name="ws-chat"),  # type: ignore[arg-type]
]


def websocket_application(patterns: list[Any]) -> Any:
    """The websocket stack: transport probe, session user (origin-checked in the consumer), routes.

    Origins are checked per credential in `execution.ws_auth` rather than for every connection:
    programs holding an API key or a ticket send no `Origin`, and only cookie sessions need it.
    """
    return TransportBacklogMiddleware(AuthMiddlewareStack(URLRouter(patterns)))
