"""An oversized bundle answers 413 on every path, and its body names the plan's quota like a quota error."""

from __future__ import annotations

from typing import Any

import pytest

from agents.errors import BundleTooLarge
from agents.services import bundle_upload
from organizations.models import Organization
from organizations.services import Actor
from tests.bundles import stored_files, upload

LIMIT = 2000


@pytest.fixture
def small_plan(alice: Any) -> Organization:
    """Alice's plan allows bundles of LIMIT bytes."""
    Organization.objects.filter(pk=alice.organization.pk).update(max_bundle_bytes=LIMIT)
    alice.organization.refresh_from_db()
    return alice.organization


def _assert_names_the_quota(error: dict[str, Any]) -> None:
    assert error["type"] == "payload_too_large"
    assert error["detail"]["quota"] == "max_bundle_bytes"
    assert error["detail"]["limit"] == LIMIT and error["detail"]["limit_bytes"] == LIMIT
    assert error["detail"]["resets_at"] is None
    assert "max_bundle_bytes" in error["message"] and "plan" in error["message"]
    assert str(LIMIT) in error["message"]


@pytest.mark.parametrize("multipart", [True, False], ids=["multipart", "raw"])
def test_an_upload_over_the_plans_maximum_is_413_naming_the_quota(
    alice: Any, small_plan: Organization, media_root: Any, multipart: bool
) -> None:
    response = upload(alice.keys["all"], b"// " + b"x" * LIMIT, multipart=multipart)
    assert response.status_code == 413
    _assert_names_the_quota(response.json()["error"])
    assert stored_files(media_root) == []


def test_the_service_refusal_carries_the_size_too(small_plan: Organization) -> None:
    data = b"// " + b"x" * LIMIT
    with pytest.raises(BundleTooLarge) as refused:
        bundle_upload(organization=small_plan, slug="big", data=data, actor=Actor.system("tests"))
    assert refused.value.http_status == 413
    assert refused.value.detail == {
        "quota": "max_bundle_bytes",
        "limit": LIMIT,
        "limit_bytes": LIMIT,
        "resets_at": None,
        "bytes": len(data),
    }
