"""Operator admin: organizations with members and limits, API keys (revocable, never secret), audit log;
every change goes through the same services as the API."""

from __future__ import annotations

from typing import Any, cast

from django.apps import apps
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.forms import BaseInlineFormSet, ModelForm
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from organizations.admin_operator import OrganizationOperatorActions
from organizations.admin_sandbox import SANDBOX_INLINES, sandbox_formset_save
from organizations.errors import LastOwner
from organizations.models import ApiKey, AuditLog, Membership, Organization, Role
from organizations.operations import org_set_limits
from organizations.quotas import RunLimitAboveMaximum, quota_check_run_limits
from organizations.services import (
    PROFILE_FIELDS,
    Actor,
    apikey_revoke,
    audit_record,
    membership_add,
    membership_change_role,
    membership_remove,
    org_update,
    organization_set_sandbox_backend,
)


def _operator(request: HttpRequest) -> Actor:
    user = cast(User, request.user)  # the admin only serves signed-in staff
    return Actor.operator(label=f"operator:{user.get_username()}", user=user)


class MembershipFormSet(BaseInlineFormSet):
    """Refuses what the membership services refuse, before anything is saved: losing the last owner."""

    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        owners_before = owners_after = 0
        for form in self.forms:
            if not hasattr(form, "cleaned_data") or not form.cleaned_data:
                continue
            existing = form.instance.pk is not None
            if existing and "user" in form.changed_data:
                raise ValidationError("A membership's user cannot change: remove it and add the other user.")
            if existing and form.initial.get("role") == Role.OWNER:
                owners_before += 1
            if not form.cleaned_data.get("DELETE") and form.cleaned_data.get("role") == Role.OWNER:
                owners_after += 1
        if owners_before and not owners_after:
            raise ValidationError(LastOwner.default_message)


class MembershipInline(admin.TabularInline):
    model = Membership
    formset = MembershipFormSet
    extra = 0
    raw_id_fields = ["user"]
    fields = ["user", "role", "created_at"]
    readonly_fields = ["created_at"]


@admin.register(Organization)
class OrganizationAdmin(OrganizationOperatorActions, admin.ModelAdmin):
    list_display = ["slug", "name", "public_id", "is_active", "api_rate", "runs_per_month", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["slug", "name", "public_id"]
    # Suspension cancels runs and closes connections: the suspend / reactivate actions do it.
    readonly_fields = ["public_id", "is_active", "created_at", "usage_panel", "activity_panel"]
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
            "",
            '<li><a href="{}">{}</a> {} ({})</li>',
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
            "",
            '<li><a href="{}">{}</a> active version: {}</li>',
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
            "",
            '<li><a href="{}">{}</a> {} {} {}</li>',
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
        none = format_html("<li>{}</li>", "none")
        return format_html(
            '<div class="lightfast-activity"><strong>API keys</strong><ul>{}</ul>'
            "<strong>Bundles</strong><ul>{}</ul>"
            '<strong>Recent runs</strong> (<a href="{}">all</a>)<ul>{}</ul></div>',
            keys or none,
            bundles or none,
            all_runs,
            runs or none,
        )

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        """The change form, checking per-run limits against the platform maximums like the API does."""
        form = super().get_form(request, obj, change=change, **kwargs)

        class LimitsCheckedForm(form):  # type: ignore[valid-type,misc]
            def clean(self) -> dict[str, Any]:
                cleaned: dict[str, Any] = super().clean()
                changed = [name for name in self.changed_data if name in Organization.LIMIT_FIELDS]
                limits = {name: cleaned[name] for name in changed if name in cleaned}
                try:
                    quota_check_run_limits(changes=limits)
                except RunLimitAboveMaximum as exc:
                    raise ValidationError(exc.message) from exc
                return cleaned

        return LimitsCheckedForm

    def save_model(self, request: HttpRequest, obj: Organization, form: ModelForm, change: bool) -> None:
        """Create, or apply each changed field through its service (each one writes the audit log)."""
        actor = _operator(request)
        if not change:
            super().save_model(request, obj, form, change)
            audit_record(
                actor=actor,
                action="organization.created",
                organization=obj,
                target=obj,
                metadata={"slug": obj.slug, "name": obj.name},
            )
            return
        stored = Organization.objects.get(pk=obj.pk)
        changed = {name: getattr(obj, name) for name in form.changed_data}
        limits = {name: value for name, value in changed.items() if name in Organization.LIMIT_FIELDS}
        if limits:
            org_set_limits(organization=stored, changes=limits, actor=actor)
        if "sandbox_backend" in changed:
            organization_set_sandbox_backend(
                organization=stored, backend=changed["sandbox_backend"], actor=actor
            )
        profile = {name: value for name, value in changed.items() if name in PROFILE_FIELDS}
        if profile:
            org_update(organization=stored, changes=profile, actor=actor)

    def save_formset(
        self, request: HttpRequest, form: ModelForm, formset: BaseInlineFormSet, change: bool
    ) -> None:
        """Save memberships, recording additions, role changes and removals in the audit log."""
        actor = _operator(request)
        if sandbox_formset_save(formset=formset, actor=actor):
            return
        formset.save(commit=False)
        # Owners are added and promoted before any is demoted or removed, so a hand-over of
        # ownership in one submit never passes through "no owner" (which the services refuse).
        for membership in formset.new_objects:
            membership_add(
                organization=form.instance, user=membership.user, role=membership.role, actor=actor
            )
        role_changes = [membership for membership, fields in formset.changed_objects if "role" in fields]
        for membership in sorted(role_changes, key=lambda changed: changed.role != Role.OWNER):
            stored = Membership.objects.select_related("organization", "user").get(pk=membership.pk)
            membership_change_role(membership=stored, role=membership.role, actor=actor)
        for membership in formset.deleted_objects:
            membership_remove(membership=membership, actor=actor)


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
