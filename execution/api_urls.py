"""REST API v1 routes of runs, sessions, websocket tickets and the AI SDK chat stream (at /api/v1/)."""

from django.urls import URLPattern, path

from execution import api_views, sse

urlpatterns: list[URLPattern] = [
    path("chat/<str:bundle>/<str:agent>", sse.chat_view, name="chat-stream"),
    path(
        "chat/<str:bundle>/<str:agent>/<path:chat_id>/stream", sse.chat_reconnect_view, name="chat-reconnect"
    ),
    path("runs", api_views.RunListView.as_view(), name="run-list"),
    path("runs/<str:run_id>", api_views.RunDetailView.as_view(), name="run-detail"),
    path("runs/<str:run_id>/events", api_views.RunEventsView.as_view(), name="run-events"),
    path("runs/<str:run_id>/cancel", api_views.RunCancelView.as_view(), name="run-cancel"),
    path("sessions", api_views.SessionListView.as_view(), name="session-list"),
    path("sessions/<str:session_id>", api_views.SessionDetailView.as_view(), name="session-detail"),
    path(
        "sessions/<str:session_id>/messages", api_views.SessionMessagesView.as_view(), name="session-messages"
    ),
    path("client-tokens", api_views.ClientTokenView.as_view(), name="client-token-create"),
    path("ws-tickets", api_views.WsTicketView.as_view(), name="ws-ticket-create"),
]
