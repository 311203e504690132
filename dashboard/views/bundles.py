"""`/bundles/`: the organization's bundles, uploading one (progress, then introspection live), a bundle's
versions and agents, and the tool playground; every write goes through `agents.services`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django import forms
from django.contrib import messages
from django.db.models import Prefetch
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.generic import TemplateView

from agents.models import AgentManifest, Bundle, BundleVersion, VersionStatus
from agents.selectors import bundle_get, bundle_list, version_get, version_list
from agents.services import (
    bundle_rollback,
    bundle_upload,
    bundle_version_activate,
    bundle_versions_reap_stale,
    tool_invoke,
)
from agents.uploads import LimitedBundleUploadHandler
from dashboard.bundle_forms import BundleUploadForm, upload_error_field, upload_error_text
from dashboard.schema_forms import SchemaField, ToolInputForm, schema_fields
from dashboard.scoping import OrganizationPageMixin
from lightfast_cloud.errors import LightfastError
from organizations.models import Scope

# htmx asks for the fragments it swaps in; without it (no JavaScript) the same views answer whole pages.
HTMX_HEADER = "HX-Request"
# The event a finished introspection sends (`HX-Trigger`): the bundles table reloads itself.
BUNDLES_CHANGED = "bundles-changed"


def is_htmx(request: HttpRequest) -> bool:
    """Whether htmx sent the request (it swaps a fragment of the answer in)."""
    return request.headers.get(HTMX_HEADER) == "true"


@dataclass(frozen=True)
class BundleRow:
    """One bundle of the list: its active version, its newest one and the active version's agents."""

    bundle: Bundle
    active: BundleVersion | None
    newest: BundleVersion | None
    agents: list[str]


def bundle_rows(bundles: Sequence[Bundle]) -> list[BundleRow]:
    """The list's rows from bundles with their versions prefetched newest first (`versions_newest_first`)."""
    rows = []
    for bundle in bundles:
        versions: list[BundleVersion] = getattr(bundle, "versions_newest_first", [])
        active = bundle.active_version
        agents = sorted(active.agents()) if active is not None else []
        rows.append(
            BundleRow(bundle=bundle, active=active, newest=versions[0] if versions else None, agents=agents)
        )
    return rows


@method_decorator(csrf_exempt, name="dispatch")  # POST checks it in `upload`, once the upload handler is set
class BundleListView(OrganizationPageMixin, TemplateView):
    """The bundles with their active version, status and agents, and the upload form.

    POST `Bundle file` and `Slug` uploads (`bundle_upload`): htmx gets the form back (refusals next to
    their field) with introspection's status, which polls itself until `ready` or `rejected`; without
    JavaScript the browser goes to the bundle's page.
    """

    template_name = "dashboard/bundles/list.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        newest_first = Prefetch(
            "versions",
            queryset=BundleVersion.objects.defer("manifest", "error_detail").order_by("-number"),
            to_attr="versions_newest_first",
        )
        bundles = list(bundle_list(organization=self.organization).prefetch_related(newest_first))
        context["rows"] = bundle_rows(bundles)
        context.setdefault("form", BundleUploadForm())
        return context

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # The size limit applies while the body streams in (agents/uploads.py), as on the REST API; the
        # handler must be in place before anything reads request.POST, the CSRF check included.
        limit = int(self.organization.max_bundle_bytes)
        request.upload_handlers = [LimitedBundleUploadHandler(request, limit=limit)]
        return self.upload(request)

    @method_decorator(csrf_protect)
    def upload(self, request: HttpRequest) -> HttpResponse:
        """Validate the form, upload, answer the fragment (htmx) or the page."""
        try:
            form = BundleUploadForm(request.POST, request.FILES)
            valid = form.is_valid()
        except LightfastError as exc:  # refused while reading the body (too large, a second file)
            form = BundleUploadForm({}, {}, refused=exc)
            valid = form.is_valid()
        version = None
        if valid:
            try:
                result = bundle_upload(
                    organization=self.organization,
                    slug=form.cleaned_data["slug"],
                    data=form.cleaned_data["file"].read(),
                    actor=self.tenant.actor,
                )
            except LightfastError as exc:
                form.add_error(upload_error_field(exc), upload_error_text(exc))
            else:
                version = result.version
                if not is_htmx(request):
                    messages.success(request, _uploaded_text(version, created=result.created))
                    return redirect("dashboard:bundle-detail", slug=version.bundle.slug)
        if is_htmx(request):
            context = {"form": BundleUploadForm() if version else form, "version": version}
            return render(request, "dashboard/bundles/_upload.html", context)
        return self.render_to_response(self.get_context_data(form=form))


def _uploaded_text(version: BundleVersion, *, created: bool) -> str:
    if not created:
        return f"Those bytes are already version {version.number} of {version.bundle.slug}."
    return f"Uploaded version {version.number} of {version.bundle.slug}; checking it in the sandbox."


class BundlePageMixin(OrganizationPageMixin):
    """Pages of one bundle of the organization (`slug` in the URL); another organization's is a 404."""

    def get_bundle(self) -> Bundle:
        """The organization's live bundle named in the URL, or 404."""
        bundle = bundle_get(organization=self.organization, slug=self.kwargs["slug"])  # type: ignore[attr-defined]
        if bundle is None:
            raise Http404("No such bundle in this organization.")
        return bundle


class VersionStatusView(BundlePageMixin, TemplateView):
    """A version's status as a fragment that polls itself while introspection runs (htmx)."""

    template_name = "dashboard/bundles/_version_status.html"

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        version = version_get(bundle=self.get_bundle(), number=kwargs["number"])
        if version is None:
            raise Http404("No such version.")
        if version.status == VersionStatus.VALIDATING:
            # As the REST API does: a version whose introspection crashed is queued again, lazily.
            bundle_versions_reap_stale(organization_id=self.organization.pk)
        response = self.render_to_response(self.get_context_data(version=version))
        if version.status != VersionStatus.VALIDATING:
            response["HX-Trigger"] = BUNDLES_CHANGED
        return response


@dataclass(frozen=True)
class ToolView:
    """One tool of an agent, readable: description and input fields."""

    name: str
    description: str
    fields: list[SchemaField]


@dataclass(frozen=True)
class AgentView:
    """One agent of a version, readable: model, system prompt, tools."""

    agent: AgentManifest
    model: str
    system: str
    tools: list[ToolView] = field(default_factory=list)


def model_text(model: Any) -> str:
    """A manifest's model as people name it: `gateway: openai/gpt-4o-mini`, or the string."""
    if isinstance(model, dict):
        model_id = model.get("id") or model.get("modelId") or "?"
        provider = model.get("provider")
        return f"{provider}: {model_id}" if provider else str(model_id)
    return str(model) if model else "(none)"


def agent_views(version: BundleVersion) -> list[AgentView]:
    """The version's agents with their tools' input schemas as readable fields."""
    views = []
    for agent in version.agents().values():
        tools = [
            ToolView(
                name=name,
                description=str(spec.get("description") or ""),
                fields=schema_fields(spec.get("inputSchema")),
            )
            for name, spec in sorted(agent.tools.items())
        ]
        system = (
            agent.system
            if isinstance(agent.system, str)
            else ("" if agent.system is None else str(agent.system))
        )
        views.append(AgentView(agent=agent, model=model_text(agent.model), system=system, tools=tools))
    return views


class BundleDetailView(BundlePageMixin, TemplateView):
    """A bundle's versions (activate, roll back), its agents and their tools, and a quarantine banner."""

    template_name = "dashboard/bundles/detail.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        bundle = self.get_bundle()
        versions = list(version_list(bundle=bundle))
        active = next((v for v in versions if v.pk == bundle.active_version_id), None)
        shown = active or next((v for v in versions if v.status == VersionStatus.READY), None)
        context.update(
            bundle=bundle,
            versions=versions,
            active=active,
            shown=shown,
            agents=agent_views(shown) if shown is not None else [],
            quarantined=[v for v in versions if v.status == VersionStatus.QUARANTINED],
            validating=[v for v in versions if v.status == VersionStatus.VALIDATING],
            can_roll_back=active is not None
            and any(v.status == VersionStatus.READY and v.number < active.number for v in versions),
        )
        return context


class VersionActivateView(BundlePageMixin, View):
    """POST: make a ready version the active one (admins and owners)."""

    def post(self, request: HttpRequest, slug: str, number: int) -> HttpResponse:
        version = version_get(bundle=self.get_bundle(), number=number)
        if version is None:
            raise Http404("No such version.")
        try:
            bundle_version_activate(version=version, actor=self.tenant.actor)
        except LightfastError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Version {version.number} is now active.")
        return redirect("dashboard:bundle-detail", slug=slug)


class BundleRollbackView(BundlePageMixin, View):
    """POST: activate the newest ready version older than the active one (admins and owners)."""

    def post(self, request: HttpRequest, slug: str) -> HttpResponse:
        try:
            bundle = bundle_rollback(bundle=self.get_bundle(), actor=self.tenant.actor)
        except LightfastError as exc:
            messages.error(request, exc.message)
        else:
            number = bundle.active_version.number if bundle.active_version else "?"
            messages.success(request, f"Rolled back: version {number} is now active.")
        return redirect("dashboard:bundle-detail", slug=slug)


class AgentChoiceForm(forms.Form):
    """Which agent's tool to call, when several agents of the version have a tool of that name."""

    agent = forms.ChoiceField(label="Agent")


class ToolPlaygroundView(BundlePageMixin, TemplateView):
    """A form generated from the tool's JSON Schema; Invoke runs the tool of the active version in the sandbox
    (`tool_invoke`, the REST invoke's service) and shows its output or error, logs and usage."""

    template_name = "dashboard/bundles/tool.html"
    scope_by_method = {"POST": Scope.EXECUTE}

    def setup_tool(self) -> dict[str, Any]:
        """The bundle, its runnable active version and the agents that have the tool (404 if none)."""
        bundle = self.get_bundle()
        tool = self.kwargs["tool"]
        version = bundle.active_version
        if version is None or not version.is_runnable:
            raise Http404("The bundle has no active version that can run.")
        owners = {key: agent for key, agent in version.agents().items() if tool in agent.tools}
        if not owners:
            raise Http404("No agent of the active version has this tool.")
        return {"bundle": bundle, "version": version, "tool": tool, "owners": owners}

    def forms_for(
        self, setup: dict[str, Any], data: Any = None
    ) -> tuple[AgentChoiceForm | None, str, ToolInputForm]:
        """The agent choice (only when several agents have the tool), the chosen agent and its input form."""
        owners: dict[str, AgentManifest] = setup["owners"]
        agent_form = None
        agent = next(iter(owners))
        if len(owners) > 1:
            agent_form = AgentChoiceForm(data if data is not None else None, initial={"agent": agent})
            agent_form.fields["agent"].choices = [(key, key) for key in owners]  # type: ignore[attr-defined]
            requested = (data or {}).get("agent") or self.request.GET.get("agent")
            if requested in owners:
                agent = requested
        spec = owners[agent].tools[setup["tool"]]
        return agent_form, agent, ToolInputForm(data, schema=spec.get("inputSchema"))

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        setup = kwargs.pop("setup", None) or self.setup_tool()
        context.update(setup)
        if "form" not in context:
            context["agent_form"], context["agent"], context["form"] = self.forms_for(setup)
        spec = setup["owners"][context["agent"]].tools[setup["tool"]]
        context["description"] = str(spec.get("description") or "")
        context["can_execute"] = self.tenant.has_scope(Scope.EXECUTE)
        return context

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        setup = self.setup_tool()
        agent_form, agent, form = self.forms_for(setup, request.POST)
        result = None
        if form.is_valid() and (agent_form is None or agent_form.is_valid()):
            try:
                result = tool_invoke(
                    organization=self.organization,
                    bundle=setup["bundle"],
                    tool=setup["tool"],
                    agent=agent,
                    input=form.tool_input(),
                    actor=self.tenant.actor,
                )
            except LightfastError as exc:
                form.add_error(None, exc.message)
            else:
                error = result.get("error") or {}
                if error.get("type") == "invalid_input":
                    form.add_issues((error.get("detail") or {}).get("issues"))
        context = self.get_context_data(
            setup=setup, form=form, agent_form=agent_form, agent=agent, result=result
        )
        return self.render_to_response(context)
