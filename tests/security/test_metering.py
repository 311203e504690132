"""Every load and every call is metered to its organization, however it ends.

The top-level code of a bundle runs at upload (introspection, in the Celery worker) and again when
a worker first loads it for a call; both are the uploading organization's CPU. A call the kernel's
CPU backstop kills cannot report anything itself: the worker's reaping of it (kernel rusage) does,
and the host meters at least the CPU limit plus the backstop. Checked on the organization's own
usage counters, through the upload API, the tool invoke API and tool runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from execution.models import Run
from execution.sandbox.jail import CPU_BACKSTOP_MS
from execution.sandbox.pool import runner_from_env
from execution.services import run_start
from tests.agents.test_introspection import wait_for_version
from tests.bundles import tool_invoke, upload, uploaded_version

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("media_root")]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "security"
HEAVY = FIXTURES / "cpu_heavy.mjs"
BACKSTOP = FIXTURES / "cpu_backstop.mjs"
# Elements for a default-comparator sort of ~300 ms of CPU: several times the 100 ms limit below.
LONG_SORT = 500_000


def _cpu_used(api: Any, world: Any) -> int:
    body = api.get("/api/v1/usage", key=world.keys["read"]).json()
    return int(body["quotas"]["sandbox_cpu_ms_per_month"]["used"])


def test_top_level_cpu_is_metered_at_upload_and_at_first_load(celery_worker, alice, bob, api):
    assert upload(alice.keys["all"], HEAVY.read_bytes(), slug="meter").status_code == 201
    assert wait_for_version(api, alice.keys["all"], "meter")["status"] == "ready"
    at_upload = _cpu_used(api, alice)

    # The first call in this process's pool loads the bundle: its usage carries the load.
    first = tool_invoke(api, alice.keys["all"], "meter", "burn", {})
    assert first["ok"] is True, first["error"]
    load_ms = first["usage"]["load_cpu_ms"]
    call_ms = first["usage"]["cpu_ms"] - load_ms
    # The top level does the same work as the tool: it cannot be metered as (almost) nothing.
    assert call_ms > 0
    assert load_ms >= call_ms / 2
    assert at_upload >= call_ms / 2  # the upload's introspection evaluated it too
    assert _cpu_used(api, alice) == at_upload + first["usage"]["cpu_ms"]
    assert _cpu_used(api, bob) == 0  # the uploader pays, nobody else


def test_a_call_killed_by_the_cpu_backstop_meters_at_least_its_limit(alice, bob, api):
    alice.organization.run_cpu_ms = 100
    alice.organization.save(update_fields=["run_cpu_ms"])
    uploaded_version(alice.organization, BACKSTOP, slug="backstop")
    before = _cpu_used(api, alice)

    answer = tool_invoke(api, alice.keys["all"], "backstop", "nativeSort", {"n": LONG_SORT})
    assert answer["ok"] is False
    assert answer["error"]["type"] == "cpu_limit"
    assert answer["error"]["detail"] == {"signal": "SIGPROF"}  # the kernel's backstop, not the engine
    assert answer["usage"]["cpu_ms"] >= 100 + CPU_BACKSTOP_MS
    assert _cpu_used(api, alice) - before == answer["usage"]["cpu_ms"]

    # The zygote died with the call; the next call loads the bundle again, metered with its load.
    again = tool_invoke(api, alice.keys["all"], "backstop", "nativeSort", {"n": 10})
    assert again["ok"] is True and again["output"] == 10
    if runner_from_env() == "native":
        # Its zygote ran the killed call and died with it (the Python runner forks a child per call).
        assert "load_cpu_ms" in again["usage"]
    assert _cpu_used(api, alice) - before == answer["usage"]["cpu_ms"] + again["usage"]["cpu_ms"]
    assert _cpu_used(api, bob) == 0


def test_a_tool_run_killed_by_the_cpu_backstop_meters_at_least_its_limit(celery_worker, alice, api):
    alice.organization.run_cpu_ms = 100
    alice.organization.save(update_fields=["run_cpu_ms"])
    assert upload(alice.keys["all"], BACKSTOP.read_bytes(), slug="backstop").status_code == 201
    assert wait_for_version(api, alice.keys["all"], "backstop")["status"] == "ready"
    version = alice.organization.bundles.get(slug="backstop").active_version
    before = _cpu_used(api, alice)

    run = run_start(
        organization=alice.organization,
        bundle_version=version,
        agent_key="backstop",
        tool="nativeSort",
        tool_input={"n": LONG_SORT},
    )
    # The Celery worker executes it (the run's sandbox call happens in that process's pool).
    deadline = time.monotonic() + 120
    while Run.objects.get(pk=run.pk).finished_at is None and time.monotonic() < deadline:
        time.sleep(0.2)
    run = Run.objects.get(pk=run.pk)
    assert run.error_type == "cpu_limit"
    assert run.sandbox_cpu_ms >= 100 + CPU_BACKSTOP_MS
    assert _cpu_used(api, alice) - before == run.sandbox_cpu_ms
