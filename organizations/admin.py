"""Operator admin: organizations with members and limits, API keys (revocable, never secret), audit log."""

from __future__ import annotations

from typing import Any, cast

from django.apps import apps
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.forms import BaseInlineFormSet, ModelForm
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from organizations.admin_operator import OrganizationOperatorActions
from organizations.admin_sandbox import SANDBOX_INLINES, sandbox_formset_save
from organizations.models import ApiKey, AuditLog, Membership, Organization
from organizations.services import Actor, apikey_revoke, audit_record


def _operator(request: HttpRequest) -> Actor:
    user = cast(User, request.user)  # the admin only serves signed-in staff
    return Actor.operator(label=f"operator:{user.get_username()}", user=user)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]
    fields = ["user", "role", "created_at"]
    readonly_fields = ["created_at"]


@admin.register(Organization)
class OrganizationAdmin(OrganizationOperatorActions, admin.ModelAdmin):
    list_display = ["slug", "name", "public_id", "is_active", "api_rate", "runs_per_month", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["slug", "name", "public_id"]
    readonly_fields = ["public_id", "created_at", "usage_panel", "activity_panel"]
    inlines = [MembershipInline, *SANDBOX_INLINES]
    fieldsets = [
        (None, {"fields": ["public_id", "slug", "name", "is_active", "created_at"]}),
        ("Plan limits", {"fields": list(Organization.LIMIT_FIELDS)}),
        ("Usage", {"fields": ["usage_panel"]}),
        ("API keys, bundles and recent runs", {"fields": ["activity_panel"]}),
        ("Sandbox", {"fields": ["sandbox_backend"]}),
    ]

    @admin.display(description="Activity")
    def activity_panel(self, obj: Organization) -> str:
        """The organization's API keys, bundles and last runs, linking to their admin pages."""
        if obj.pk is None:
            return "—"
        # Looked up by name: organizations sits below agents and execution in the dependency order.
        bundle_model = apps.get_model("agents", "Bundle")
        run_model = apps.get_model("execution", "Run")
        keys = format_html_join(
            "<br>",
            '<a href="{}">{}</a> {} ({})',
            (
                (
                    reverse("admin:organizations_apikey_change", args=[key.pk]),
                    key.display_prefix,
                    ",".join(key.scopes),
                    key.status,
                )
                for key in obj.api_keys.order_by("-created_at")[:20]
            ),
        )
        bundles = format_html_join(
            "<br>",
            '<a href="{}">{}</a> active version: {}',
            (
                (
                    reverse("admin:agents_bundle_change", args=[bundle.pk]),
                    bundle.slug,
                    bundle.active_version.number if bundle.active_version else "none",
                )
                for bundle in bundle_model.objects.filter(organization=obj, deleted_at__isnull=True)
                .select_related("active_version")
                .order_by("slug")[:50]
            ),
        )
        runs = format_html_join(
            "<br>",
            '<a href="{}">{}</a> {} {} {}',
            (
                (
                    reverse("admin:execution_run_change", args=[run.pk]),
                    str(run.pk)[:8],
                    run.agent_key,
                    run.status,
                    run.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                )
                for run in run_model.objects.filter(organization=obj).order_by("-created_at")[:20]
            ),
        )
        all_runs = reverse("admin:execution_run_changelist") + f"?organization__id__exact={obj.pk}"
        return format_html(
            "<b>API keys</b><br>{}<br><br><b>Bundles</b><br>{}<br><br><b>Recent runs</b> "
            '(<a href="{}">all</a>)<br>{}',
            keys or "none",
            bundles or "none",
            all_runs,
            runs or "none",
        )

    def save_model(self, request: HttpRequest, obj: Organization, form: ModelForm, change: bool) -> None:
        """Save, recording creation or which fields changed (with old and new values) in the audit log."""
        before = {}
        if change:
            stored = Organization.objects.get(pk=obj.pk)
            before = {name: getattr(stored, name) for name in form.changed_data}
        super().save_model(request, obj, form, change)
        if not change:
            audit_record(
                actor=_operator(request),
                action="organization.created",
                organization=obj,
                target=obj,
                metadata={"slug": obj.slug, "name": obj.name},
            )
        elif form.changed_data:
            limits = [name for name in form.changed_data if name in Organization.LIMIT_FIELDS]
            action = "organization.limits_changed" if limits == form.changed_data else "organization.changed"
            audit_record(
                actor=_operator(request),
                action=action,
                organization=obj,
                target=obj,
                metadata={
                    "before": before,
                    "after": {name: getattr(obj, name) for name in form.changed_data},
                },
            )

    def save_formset(
        self, request: HttpRequest, form: ModelForm, formset: BaseInlineFormSet, change: bool
    ) -> None:
        """Save memberships, recording additions, role changes and removals in the audit log."""
        actor = _operator(request)
        if sandbox_formset_save(formset=formset, actor=actor):
            return
        instances = formset.save(commit=False)
        for membership in formset.deleted_objects:
            audit_record(
                actor=actor,
                action="member.removed",
                organization=membership.organization,
                target=membership,
                metadata={"user": membership.user.get_username(), "role": membership.role},
            )
            membership.delete()
        changed = {id(obj): fields for obj, fields in formset.changed_objects}
        for membership in instances:
            adding = membership._state.adding
            membership.save()
            if adding:
                action, metadata = "member.added", {"role": membership.role}
            elif "role" in changed.get(id(membership), []):
                action, metadata = "member.role_changed", {"after": membership.role}
            else:
                continue
            audit_record(
                actor=actor,
                action=action,
                organization=membership.organization,
                target=membership,
                metadata={"user": membership.user.get_username(), **metadata},
            )
        formset.save_m2m()


# Shown read-only; the hash is left out along with the secret: neither helps an operator.
API_KEY_ADMIN_FIELDS: tuple[str, ...] = (
    "display_prefix",
    "name",
    "organization",
    "scope_list",
    "status",
    "created_by",
    "created_at",
    "last_used_at",
    "expires_at",
    "revoked_at",
)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are created by their owners (API, `org apikey`); operators inspect and revoke them."""

    list_display = [
        "display_prefix",
        "name",
        "organization",
        "scope_list",
        "status",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    ]
    list_filter = ["revoked_at", "organization"]
    search_fields = ["lookup_id", "name", "organization__slug"]
    list_select_related = ["organization"]
    readonly_fields = API_KEY_ADMIN_FIELDS
    fields = API_KEY_ADMIN_FIELDS
    actions = ["revoke_keys"]

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    @admin.display(description="key")
    def display_prefix(self, obj: ApiKey) -> str:
        return obj.display_prefix

    @admin.action(description="Revoke selected API keys", permissions=["revoke"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        """Revoke each selected key, recording the operator in the audit log."""
        revoked = 0
        for api_key in queryset.select_related("organization").filter(revoked_at__isnull=True):
            apikey_revoke(api_key=api_key, actor=_operator(request), reason="revoked in admin")
            revoked += 1
        self.message_user(request, f"Revoked {revoked} API key(s).", messages.SUCCESS)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        """Revoking needs the change permission, which is otherwise off to keep every field frozen."""
        return bool(request.user.has_perm("organizations.change_apikey"))


@admin.register(AuditLog)
class AuditLogAdmin(admin.ModelAdmin):
    """Read-only: entries are never added, changed or deleted by hand."""

    list_display = [
        "created_at",
        "organization",
        "actor_type",
        "actor_label",
        "action",
        "target_type",
        "target_id",
        "reason",
    ]
    list_filter = ["action", "actor_type"]
    search_fields = ["organization__slug", "actor_label", "action", "target_id", "reason"]
    list_select_related = ["organization"]
    date_hierarchy = "created_at"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in AuditLog._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
