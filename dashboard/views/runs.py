"""`/runs/`: the organization's runs filtered by status, agent and day, and one run's timeline, error and
usage."""

from __future__ import annotations

from typing import Any

from django.core.paginator import Paginator
from django.views.generic import TemplateView

from dashboard.run_display import RunFilterForm, error_in_words, run_timeline
from dashboard.scoping import OrganizationPageMixin
from execution.models import Run, RunEvent
from execution.selectors import run_queryset, run_queryset_filter

RUNS_PER_PAGE = 50
# A run's timeline shows this many events; the REST API pages through the rest.
TIMELINE_EVENTS = 5000


class RunListView(OrganizationPageMixin, TemplateView):
    """Runs newest first; `Status`, `Agent`, `From` and `To` filter them (a GET form)."""

    template_name = "dashboard/runs/list.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        runs = self.scoped(run_queryset(organization=self.organization))
        agents = sorted(
            f"{bundle}/{agent}"
            for bundle, agent in runs.order_by()
            .values_list("bundle_version__bundle__slug", "agent_key")
            .distinct()
        )
        form = RunFilterForm(self.request.GET or None, agents=agents)
        if form.is_bound and form.is_valid():
            runs = run_queryset_filter(
                runs,
                status=form.cleaned_data["status"] or None,
                agent=form.cleaned_data["agent"] or None,
                since=form.cleaned_data["since"],
                until=form.cleaned_data["until"],
            )
        elif form.is_bound:
            runs = runs.none()
        page = Paginator(runs.order_by("-created_at", "-pk"), RUNS_PER_PAGE).get_page(
            self.request.GET.get("page")
        )
        query = self.request.GET.copy()
        query.pop("page", None)
        context.update(form=form, page=page, runs=page.object_list, filters=query.urlencode())
        return context


class RunDetailView(OrganizationPageMixin, TemplateView):
    """A run: status, its error in plain words, usage, and the timeline of its events."""

    template_name = "dashboard/runs/detail.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        run: Run = self.get_scoped_object_or_404(
            run_queryset(organization=self.organization), pk=kwargs["run_id"]
        )
        events = list(RunEvent.objects.filter(run=run).order_by("seq")[:TIMELINE_EVENTS])
        context.update(
            run=run,
            agent_id=f"{run.bundle_version.bundle.slug}/{run.agent_key}",
            timeline=run_timeline(run, events),
            truncated=run.last_seq > len(events) and len(events) == TIMELINE_EVENTS,
            error_words=error_in_words(run.error_type) if run.error_type else "",
            usage=run.usage(),
        )
        return context
