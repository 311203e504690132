"""What the worker reads for each run: organization and version state fresh at the claim, and the
sandbox settings and model provider rebuilt as soon as their rows change (reused only while identical)."""

from __future__ import annotations

from typing import Any

import pytest

from agents.models import BundleVersion, VersionStatus
from agents.selectors import sandbox_settings_for
from execution.models import Message, Run, RunStatus
from execution.providers import model_resolve
from execution.providers.demo import DemoProvider
from execution.providers.openai_compatible import OpenAICompatibleProvider
from execution.selectors import run_events_after
from execution.services import run_execute, run_start
from organizations.models import EgressAllowedHost, Organization, OrganizationUsage
from organizations.services import (
    Actor,
    egress_host_add,
    egress_host_remove,
    model_provider_clear,
    model_provider_set,
    variable_delete,
    variable_set,
)
from tests.bundles import manifest_version

pytestmark = pytest.mark.django_db(transaction=True)

ACTOR = Actor.system("tests")


def _queued_run(organization: Organization) -> Run:
    version = manifest_version(organization)
    return run_start(organization=organization, bundle_version=version, agent_key="weather", text="hello")


def test_a_run_queued_before_its_organization_was_suspended_ends_cancelled_at_the_claim(alice: Any) -> None:
    run = _queued_run(alice.organization)
    # The suspension commits after the run was queued but without the sweep that cancels queued
    # runs (the race of a start that authenticated just before the suspension).
    Organization.objects.filter(pk=alice.organization.pk).update(is_active=False)

    assert run_execute(run_id=run.pk, worker="test") is True

    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    assert (run.error_type, run.error_message) == ("cancelled", "The organization is suspended.")
    types = [event.type for event in run_events_after(run, 0)]
    assert types[0] == "start" and types[-2:] == ["abort", "data-status"]
    assert "text-delta" not in types and run.steps == 0
    assert not Message.objects.filter(run=run, role="assistant").exists()
    assert OrganizationUsage.objects.get(organization=alice.organization).active_runs == 0


def test_a_run_queued_before_its_version_was_quarantined_fails_at_the_claim(alice: Any) -> None:
    run = _queued_run(alice.organization)
    BundleVersion.objects.filter(pk=run.bundle_version_id).update(status=VersionStatus.QUARANTINED)

    assert run_execute(run_id=run.pk, worker="test") is True

    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.error_type == "invalid_bundle"
    assert "quarantined" in run.error_message
    assert OrganizationUsage.objects.get(organization=alice.organization).active_runs == 0


def test_sandbox_settings_follow_every_change_and_are_reused_only_while_unchanged(
    alice: Any, bob: Any
) -> None:
    organization = alice.organization
    empty = sandbox_settings_for(organization)
    assert sandbox_settings_for(organization) is empty
    assert empty.env == {} and empty.egress.allow_hosts == []

    variable_set(organization=organization, key="REGION", value="eu", actor=ACTOR)
    with_variable = sandbox_settings_for(organization)
    assert with_variable.env == {"REGION": "eu"}

    variable_set(organization=organization, key="REGION", value="us", actor=ACTOR)
    assert sandbox_settings_for(organization).env == {"REGION": "us"}

    variable_set(
        organization=organization,
        key="API_TOKEN",
        value="s3cret",
        is_secret=True,
        inject_header="Authorization",
        inject_prefix="Bearer ",
        inject_hosts=["api.example.com"],
        actor=ACTOR,
    )
    egress_host_add(organization=organization, pattern="api.example.com", actor=ACTOR)
    settings = sandbox_settings_for(organization)
    assert settings.env == {"REGION": "us"}  # secrets never become process.env
    assert settings.egress.allow_hosts == ["api.example.com"]
    assert settings.egress.secrets_for("api.example.com") == {"Authorization": "Bearer s3cret"}
    assert sandbox_settings_for(organization) is settings

    # Taking access away applies to the very next call.
    egress_host_remove(host=EgressAllowedHost.objects.get(organization=organization), actor=ACTOR)
    variable_delete(variable=organization.variables.get(key="API_TOKEN"), actor=ACTOR)
    revoked = sandbox_settings_for(organization)
    assert revoked.egress.allow_hosts == [] and revoked.egress.secrets_for("api.example.com") == {}

    # Another organization never gets Alice's settings.
    assert sandbox_settings_for(bob.organization).env == {}


def test_the_organizations_model_provider_applies_from_the_next_run_on(alice: Any, settings: Any) -> None:
    settings.LIGHTFAST_MODEL_BASE_URL = ""
    organization = alice.organization
    model = {"provider": "gateway", "id": "openai/gpt-4o-mini"}
    assert isinstance(model_resolve(model, organization=organization).provider, DemoProvider)

    model_provider_set(
        organization=organization,
        base_url="https://llm.example.com/v1",
        model_map={"openai/gpt-4o-mini": "small"},
        api_key="sk-org",
        actor=ACTOR,
    )
    resolved = model_resolve(model, organization=organization)
    assert isinstance(resolved.provider, OpenAICompatibleProvider)
    assert (resolved.provider.base_url, resolved.model) == ("https://llm.example.com/v1", "small")

    model_provider_set(
        organization=organization,
        base_url="https://llm.example.com/v1",
        model_map={"openai/gpt-4o-mini": "large"},
        actor=ACTOR,
    )
    assert model_resolve(model, organization=organization).model == "large"

    model_provider_clear(organization=organization, actor=ACTOR)
    assert isinstance(model_resolve(model, organization=organization).provider, DemoProvider)
