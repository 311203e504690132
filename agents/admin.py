"""Operator views of bundles and versions: by organization, readable manifests, quarantine, download."""

from __future__ import annotations

import json
from typing import Any, cast

from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.core.files.storage import default_storage
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest
from django.http.response import HttpResponseBase
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from agents.models import Bundle, BundleVersion, VersionStatus
from agents.services import bundle_version_quarantine, bundle_version_unquarantine
from organizations.services import Actor


def _operator(request: HttpRequest) -> Actor:
    return Actor.operator(label=request.user.get_username(), user=cast(User, request.user))


class BundleVersionInline(admin.TabularInline):
    model = BundleVersion
    fk_name = "bundle"
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("number", "status", "size_bytes", "sha256", "error_type", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Versions arrive by upload only."""
        return False


@admin.register(Bundle)
class BundleAdmin(admin.ModelAdmin):
    list_display = ["slug", "organization", "name", "active_version", "created_at", "deleted_at"]
    list_filter = ["organization", ("deleted_at", admin.EmptyFieldListFilter)]
    search_fields = ["slug", "name", "organization__slug"]
    list_select_related = ["organization", "active_version"]
    readonly_fields = ["organization", "slug", "active_version", "created_by", "created_at", "deleted_at"]
    fields = [
        "organization",
        "slug",
        "name",
        "description",
        "active_version",
        "created_by",
        "created_at",
        "deleted_at",
    ]
    inlines = [BundleVersionInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Bundles are created by uploads, which validate them."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Deletion goes through the API's service, which also removes files and keeps records."""
        return False


@admin.register(BundleVersion)
class BundleVersionAdmin(admin.ModelAdmin):
    list_display = ["__str__", "organization", "status", "size_bytes", "error_type", "created_at", "download"]
    list_filter = ["status", "organization"]
    search_fields = ["bundle__slug", "sha256", "organization__slug"]
    list_select_related = ["organization", "bundle"]
    actions = ["quarantine", "unquarantine"]
    fields = (
        "organization",
        "bundle",
        "number",
        "status",
        "sha256",
        "size_bytes",
        "download",
        "error_type",
        "error_message",
        "error_line",
        "error_column",
        "manifest_pretty",
        "imports",
        "quarantined_at",
        "quarantine_reason",
        "introspect_attempts",
        "introspect_started_at",
        "validated_at",
        "uploaded_by",
        "created_at",
        "files_deleted_at",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Versions arrive by upload only."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Versions stay as records of what ran."""
        return False

    @admin.display(description="manifest")
    def manifest_pretty(self, version: BundleVersion) -> str:
        """The manifest as indented JSON."""
        if version.manifest is None:
            return "—"
        return format_html(
            '<pre style="white-space: pre-wrap; max-height: 40em; overflow: auto">{}</pre>',
            json.dumps(version.manifest, indent=2, ensure_ascii=False),
        )

    @admin.display(description="original file")
    def download(self, version: BundleVersion) -> str:
        """A link that downloads the uploaded file."""
        if not version.original_file:
            return "—"
        url = reverse("admin:agents_bundleversion_download", args=[version.pk])
        return format_html('<a href="{}">download</a>', url)

    def get_urls(self) -> list[URLPattern]:
        """Adds the download view."""
        return [
            path(
                "<int:version_id>/download/",
                self.admin_site.admin_view(self.download_view),
                name="agents_bundleversion_download",
            ),
            *super().get_urls(),
        ]

    def download_view(self, request: HttpRequest, version_id: int) -> HttpResponseBase:
        """The original upload as an attachment (never rendered: it is untrusted code)."""
        if not self.has_view_permission(request):
            raise Http404("No such version.")
        version = BundleVersion.objects.select_related("bundle").filter(pk=version_id).first()
        if version is None or not version.original_file:
            raise Http404("No such version file.")
        filename = f"{version.bundle.slug}-v{version.number}.mjs"
        response = FileResponse(
            default_storage.open(version.original_file.name or "", "rb"),
            as_attachment=True,
            filename=filename,
            content_type="application/octet-stream",
        )
        response["X-Content-Type-Options"] = "nosniff"
        return response

    @admin.action(description="Quarantine: stop the selected versions from running or becoming active")
    def quarantine(self, request: HttpRequest, queryset: QuerySet[BundleVersion]) -> None:
        """Quarantine each selected version."""
        count = 0
        for version in queryset.exclude(status=VersionStatus.QUARANTINED):
            bundle_version_quarantine(version=version, actor=_operator(request), reason="admin action")
            count += 1
        self.message_user(request, f"Quarantined {count} version(s).", messages.SUCCESS)

    @admin.action(description="Release from quarantine (not re-activated)")
    def unquarantine(self, request: HttpRequest, queryset: QuerySet[BundleVersion]) -> None:
        """Release each selected quarantined version."""
        count = 0
        for version in queryset.filter(status=VersionStatus.QUARANTINED):
            bundle_version_unquarantine(version=version, actor=_operator(request), reason="admin action")
            count += 1
        self.message_user(request, f"Released {count} version(s) from quarantine.", messages.SUCCESS)
