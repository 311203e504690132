"""`/chat/`: the agents to talk to, and a chat with one agent, new or resumed, driven in the browser by the
AI SDK's own client against `/api/v1/chat/{bundle}/{agent}` (dashboard/assets/chat.js)."""

from __future__ import annotations

from typing import Any

from django.db.models import JSONField, OuterRef, Subquery
from django.http import Http404
from django.views.generic import TemplateView

from agents.selectors import agent_list
from dashboard.scoping import OrganizationPageMixin
from execution.models import ChatSession, Message, MessageRole, Run
from execution.selectors import agent_target_resolve, session_get
from execution.serializers import MessageSerializer
from lightfast_cloud.errors import LightfastError
from organizations.models import Scope

RECENT_SESSIONS = 30
SESSION_TITLE_CHARS = 60


def session_titles(sessions: Any) -> list[dict[str, Any]]:
    """Sessions with a title: the start of their first user message (one query with the sessions)."""
    first_user_parts = Subquery(
        Message.objects.filter(session=OuterRef("pk"), role=MessageRole.USER)
        .order_by("created_at", "pk")
        .values("parts")[:1],
        output_field=JSONField(),
    )
    rows = []
    for session in sessions.annotate(first_parts=first_user_parts):
        parts = session.first_parts if isinstance(session.first_parts, list) else []
        text = " ".join(
            str(part.get("text", ""))
            for part in parts
            if isinstance(part, dict) and part.get("type") == "text"
        ).strip()
        if len(text) > SESSION_TITLE_CHARS:
            text = text[: SESSION_TITLE_CHARS - 1].rstrip() + "…"
        rows.append({"session": session, "title": text or "(no message yet)"})
    return rows


def ui_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Stored messages as the AI SDK's UI messages (`metadata.runId` as the `start` chunk gives it)."""
    result = []
    for data in MessageSerializer(messages, many=True).data:
        message: dict[str, Any] = {"id": data["id"], "role": data["role"], "parts": data["parts"]}
        if data["run"]:
            message["metadata"] = {"runId": str(data["run"])}
        result.append(message)
    return result


class ChatIndexView(OrganizationPageMixin, TemplateView):
    """The agents of the organization's active bundle versions, and the latest chats."""

    template_name = "dashboard/chat/index.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["agents"] = agent_list(organization=self.organization)
        sessions = self.scoped(ChatSession).order_by("-updated_at", "-pk")[:RECENT_SESSIONS]
        context["sessions"] = session_titles(sessions)
        return context


class ChatView(OrganizationPageMixin, TemplateView):
    """A chat with `bundle/agent`: a new one, or the session in the URL with its history; a run still going
    is resumed by the page (the AI SDK's reconnect to `…/{chatId}/stream`)."""

    template_name = "dashboard/chat/chat.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        bundle, agent = kwargs["bundle"], kwargs["agent"]
        agent_id = f"{bundle}/{agent}"
        unavailable = ""
        tools: list[str] = []
        try:
            target = agent_target_resolve(organization=self.organization, bundle=bundle, agent=agent)
            manifest = target.version.agent(agent)
            tools = manifest.tool_names if manifest is not None else []
        except LightfastError as exc:
            if exc.code == "not_found":
                raise Http404(exc.message) from exc
            unavailable = exc.message  # the bundle exists but cannot run now: history stays readable
        session = None
        messages: list[dict[str, Any]] = []
        active_run = ""
        if kwargs.get("session"):
            session = session_get(organization=self.organization, public_id=kwargs["session"])
            if session is None or session.agent != agent_id:
                raise Http404("No such chat with this agent.")
            messages = ui_messages(list(session.messages.order_by("created_at", "pk")))
            run = Run.objects.filter(session=session).order_by("-created_at").first()
            if run is not None and not run.is_terminal:
                active_run = str(run.pk)
        sessions = self.scoped(ChatSession).filter(agent=agent_id).order_by("-updated_at", "-pk")
        context.update(
            bundle=bundle,
            agent=agent,
            agent_id=agent_id,
            session=session,
            sessions=session_titles(sessions[:RECENT_SESSIONS]),
            initial_messages=messages,
            active_run=active_run,
            unavailable=unavailable,
            tools=tools,
            can_execute=self.tenant.has_scope(Scope.EXECUTE),
            api=f"/api/v1/chat/{bundle}/{agent}",
            base_path=f"/chat/{bundle}/{agent}/",
        )
        return context
