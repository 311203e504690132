"""Operator views of runs and chat sessions: read-only records, filters and search, and cancelling runs."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any, cast

from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from execution.models import ChatSession, Message, Run, RunEvent
from organizations.admin_operator import ReasonActionForm
from organizations.operations import ReasonRequired, org_cancel_runs
from organizations.quotas import ACTIVE_RUN_STATUSES
from organizations.services import Actor

# The run page lists at most this many events (a long chat has thousands of text deltas).
EVENTS_SHOWN = 500
# The agent filter offers at most this many `bundle/agentKey` choices.
AGENT_CHOICES = 200


def _operator(request: HttpRequest) -> Actor:
    user = cast(User, request.user)  # the admin only serves signed-in staff
    return Actor.operator(label=f"operator:{user.get_username()}", user=user)


def _pretty(value: Any) -> str:
    return format_html(
        '<pre style="white-space: pre-wrap; max-height: 30em; overflow: auto; margin: 0">{}</pre>',
        json.dumps(value, indent=2, ensure_ascii=False, default=str),
    )


class AgentListFilter(admin.SimpleListFilter):
    """Runs of one agent, `bundle/agentKey`."""

    title = "agent"
    parameter_name = "agent"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        """The agents that have runs."""
        pairs = (
            Run.objects.values_list("bundle_version__bundle__slug", "agent_key")
            .order_by("bundle_version__bundle__slug", "agent_key")
            .distinct()[:AGENT_CHOICES]
        )
        return [(f"{slug}/{agent}", f"{slug}/{agent}") for slug, agent in pairs]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Run]) -> QuerySet[Run]:
        """Only the chosen agent's runs."""
        value = self.value()
        if not value:
            return queryset
        slug, _, agent = value.partition("/")
        return queryset.filter(bundle_version__bundle__slug=slug, agent_key=agent)


class ErrorTypeListFilter(admin.SimpleListFilter):
    """Runs that ended with one error type (or with none)."""

    title = "error type"
    parameter_name = "error_type"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        """The error types runs ended with."""
        types = Run.objects.exclude(error_type="").values_list("error_type", flat=True).order_by("error_type")
        return [("-", "none"), *((value, value) for value in types.distinct())]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Run]) -> QuerySet[Run]:
        """Only runs with the chosen error type."""
        value = self.value()
        if not value:
            return queryset
        return queryset.filter(error_type="" if value == "-" else value)


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    """Every organization's runs; cancel the selected ones with a reason."""

    list_display = [
        "id",
        "organization",
        "agent",
        "kind",
        "status",
        "error_type",
        "created_at",
        "wall_ms",
        "sandbox_cpu_ms",
        "tool_calls",
    ]
    list_filter = [
        "status",
        ("organization", admin.RelatedOnlyFieldListFilter),
        AgentListFilter,
        ErrorTypeListFilter,
        "kind",
        "created_at",
    ]
    search_fields = [
        "=id",
        "organization__slug",
        "agent_key",
        "bundle_version__bundle__slug",
        "session__public_id",
        "error_message",
        "worker",
    ]
    date_hierarchy = "created_at"
    list_select_related = ["organization", "bundle_version__bundle"]
    action_form = ReasonActionForm
    actions = ["cancel_runs"]
    fieldsets = [
        (None, {"fields": ["id", "organization", "agent", "bundle_version", "kind", "session", "status"]}),
        ("Error", {"fields": ["error_type", "error_message"]}),
        ("Input and output", {"fields": ["input_pretty", "output_pretty"]}),
        (
            "Usage",
            {
                "fields": [
                    "model",
                    "input_tokens",
                    "output_tokens",
                    "sandbox_cpu_ms",
                    "wall_ms",
                    "tool_calls",
                    "steps",
                ]
            },
        ),
        (
            "Execution",
            {
                "fields": [
                    "backend",
                    "worker",
                    "wall_limit_ms",
                    "created_by",
                    "created_at",
                    "enqueued_at",
                    "requeue_count",
                    "started_at",
                    "heartbeat_at",
                    "cancel_requested_at",
                    "finished_at",
                    "last_seq",
                ]
            },
        ),
        ("Events", {"fields": ["events_table"]}),
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        """Everything: runs are the platform's record."""
        return [str(name) for _, options in self.fieldsets for name in options["fields"]]

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Runs start through the API and websockets only."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Read-only; cancelling is an action with its own permission."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Runs are records of usage and of what ran."""
        return False

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        """Cancelling needs the change permission, which is otherwise off to keep every field frozen."""
        return bool(request.user.has_perm("execution.change_run"))

    @admin.display(description="agent", ordering="agent_key")
    def agent(self, run: Run) -> str:
        """`bundle/agentKey`."""
        return f"{run.bundle_version.bundle.slug}/{run.agent_key}"

    @admin.display(description="input")
    def input_pretty(self, run: Run) -> str:
        """The tool run's input as JSON (a chat's input is the session's last user message)."""
        return _pretty(run.input) if run.input else "—"

    @admin.display(description="output")
    def output_pretty(self, run: Run) -> str:
        """The run's output as JSON."""
        return _pretty(run.output) if run.output is not None else "—"

    @admin.display(description="events")
    def events_table(self, run: Run) -> str:
        """The run's events in seq order (the first EVENTS_SHOWN)."""
        events = list(RunEvent.objects.filter(run=run).order_by("seq")[:EVENTS_SHOWN])
        if not events:
            return "—"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            (
                (
                    event.seq,
                    event.created_at.strftime("%H:%M:%S.%f")[:-3],
                    event.type,
                    json.dumps(event.payload, ensure_ascii=False)[:2000],
                )
                for event in events
            ),
        )
        more = (
            format_html("<p>Showing the first {} of {} events.</p>", EVENTS_SHOWN, run.last_seq)
            if run.last_seq > EVENTS_SHOWN
            else ""
        )
        return format_html(
            "<table><thead><tr><th>seq</th><th>time</th><th>type</th><th>payload</th></tr></thead>"
            "<tbody>{}</tbody></table>{}",
            rows,
            more,
        )

    @admin.action(description="Cancel the selected runs (queued or running)", permissions=["cancel"])
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        """Cancel each selected active run; each is written to the audit log with the reason."""
        reason = str(request.POST.get("reason", "")).strip()
        if not reason:
            self.message_user(
                request, "Type a reason next to the action menu: it goes in the audit log.", messages.ERROR
            )
            return
        by_organization: dict[Any, list[Any]] = defaultdict(list)
        for run in queryset.filter(status__in=ACTIVE_RUN_STATUSES).select_related("organization"):
            by_organization[run.organization].append(run.pk)
        cancelled = 0
        try:
            for organization, run_ids in by_organization.items():
                cancelled += org_cancel_runs(
                    organization=organization, actor=_operator(request), reason=reason, run_ids=run_ids
                )
        except ReasonRequired as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return
        skipped = queryset.count() - cancelled
        note = f" ({skipped} had already ended)" if skipped else ""
        self.message_user(request, f"Cancelled {cancelled} run(s){note}.", messages.SUCCESS)


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    can_delete = False
    fields = ("created_at", "role", "text_parts", "run")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Messages are written by runs."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Read-only."""
        return False

    @admin.display(description="parts")
    def text_parts(self, message: Message) -> str:
        """The message's parts as JSON."""
        return _pretty(message.parts)


@admin.register(ChatSession)
class ChatSessionAdmin(admin.ModelAdmin):
    """Every organization's chat sessions with their messages, read-only."""

    list_display = ["public_id", "organization", "agent", "created_at", "updated_at"]
    list_filter = [("organization", admin.RelatedOnlyFieldListFilter), "created_at"]
    search_fields = ["public_id", "agent", "organization__slug", "resource_id"]
    list_select_related = ["organization"]
    date_hierarchy = "updated_at"
    fields = ("public_id", "organization", "agent", "resource_id", "created_by", "created_at", "updated_at")
    readonly_fields = fields
    inlines = [MessageInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Sessions are created by chats."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Read-only."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Sessions are kept with their runs."""
        return False
