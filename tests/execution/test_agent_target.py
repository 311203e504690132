"""`bundle/agent` → the runnable active version: read fresh every time, the version's manifest cached."""

from __future__ import annotations

from typing import Any

import pytest

from agents.models import Bundle
from agents.services import (
    bundle_version_activate,
    bundle_version_quarantine,
    bundle_version_unquarantine,
)
from execution.selectors import agent_target_resolve
from lightfast_cloud.errors import LightfastError
from organizations.services import Actor
from tests.bundles import manifest_version, weather_manifest


def _error(organization: Any, bundle: str = "weather", agent: str = "weather") -> dict[str, Any]:
    with pytest.raises(LightfastError) as caught:
        agent_target_resolve(organization=organization, bundle=bundle, agent=agent)
    return {"code": caught.value.code, "message": caught.value.message}


def test_every_change_of_the_bundle_or_its_version_holds_at_the_next_resolve(alice: Any) -> None:
    org = alice.organization
    first = manifest_version(org)
    target = agent_target_resolve(organization=org, bundle="weather", agent="weather")
    assert target.version.pk == first.pk
    assert target.agent_id == "weather/weather"
    assert target.version.organization is org
    assert target.version.is_runnable

    # Quarantined: refused at once, although the version is in the cache.
    bundle_version_quarantine(version=first, actor=Actor.system("tests"), reason="bad")
    assert _error(org)["code"] == "invalid_bundle"
    assert "quarantined" in _error(org)["message"]
    bundle_version_unquarantine(version=first, actor=Actor.system("tests"))
    bundle_version_activate(version=first, actor=Actor.system("tests"))  # quarantine deactivated it
    assert agent_target_resolve(organization=org, bundle="weather", agent="weather").version.pk == first.pk

    # A new active version with another agent: the old agent is gone at once.
    manifest = weather_manifest()
    manifest["agents"] = {"forecaster": manifest["agents"]["weather"]}
    second = manifest_version(org, manifest=manifest)
    assert _error(org)["code"] == "not_found"
    forecaster = agent_target_resolve(organization=org, bundle="weather", agent="forecaster")
    assert forecaster.version.pk == second.pk

    # Rolled back by hand, then the bundle deleted.
    Bundle.objects.filter(pk=first.bundle_id).update(active_version=first)
    assert agent_target_resolve(organization=org, bundle="weather", agent="weather").version.pk == first.pk
    Bundle.objects.filter(pk=first.bundle_id).update(deleted_at=first.created_at)
    assert _error(org)["code"] == "not_found"


def test_the_callers_copy_is_its_own(alice: Any) -> None:
    version = manifest_version(alice.organization)
    one = agent_target_resolve(organization=alice.organization, bundle="weather", agent="weather").version
    one.status = "quarantined"
    one.manifest_marker = "changed by one caller"
    two = agent_target_resolve(organization=alice.organization, bundle="weather", agent="weather").version
    assert two.pk == version.pk and two.status == "ready"
    assert not hasattr(two, "manifest_marker")


def test_another_organizations_bundle_of_the_same_name_is_not_found(alice: Any, bob: Any) -> None:
    manifest_version(alice.organization)
    assert agent_target_resolve(organization=alice.organization, bundle="weather", agent="weather")
    assert _error(bob.organization)["code"] == "not_found"
    bobs = manifest_version(bob.organization)
    target = agent_target_resolve(organization=bob.organization, bundle="weather", agent="weather")
    assert target.version.pk == bobs.pk and target.version.organization is bob.organization
