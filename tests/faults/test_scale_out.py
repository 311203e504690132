"""Two nodes on one PostgreSQL and one Redis, as on two machines: each its own web process and Celery worker
with a data directory of its own (they share the database, redis, SECRET_KEY and the bundle store). Runs
spread over both workers, a websocket on node A streams runs node B executes, and when node B's worker
dies its runs fail over to node A."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from execution.models import Run, RunStatus
from lightfast_cloud.celery import app
from lightfast_cloud.launcher import (
    celery_worker_argv,
    web_listen_socket,
    web_server_argv,
    web_server_default,
)
from organizations.models import Organization
from tests.bundles import WEATHER
from tests.execution.fake_openai import FakeOpenAI
from tests.faults.stack import Outcome, RunStreams, Web, check_runs, record, wait_until
from tests.faults.test_faults import _ready_bundle
from tests.services import PROJECT_ROOT, service_env, stop_group

pytestmark = [
    pytest.mark.skipif(
        settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
        reason="scale-out needs a database several machines share: PostgreSQL (CI's second pass), not SQLite",
    ),
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(240),
]

AGENT = "weather/weather"
NODE_ENV = {
    "LIGHTFAST_RUN_HEARTBEAT_S": "0.5",
    "LIGHTFAST_RUN_STALE_S": "4",
    "LIGHTFAST_RUN_REAP_INTERVAL_S": "1",
    "LIGHTFAST_RUN_REQUEUE_S": "3",
    "LIGHTFAST_SANDBOX_WORKERS": "1",
    "LIGHTFAST_MODEL_API_KEY": "sk-test-platform-key",
    "LIGHTFAST_MODEL_MAX_RETRIES": "0",
}


@dataclass
class Node(Web):
    """One machine's processes: a web server and a Celery worker (two runs at a time)."""

    name: str = ""
    web: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None
    hostname: str = ""

    def stop(self) -> None:
        for process in (self.web, self.worker):
            if process is not None:
                stop_group(process, 10)


def start_node(name: str, root: Path, media: Path, fake: FakeOpenAI, *, beat: bool) -> Node:
    """Start a node's web and worker processes with `root/name` as their data directory."""
    data_dir = root / name
    data_dir.mkdir()
    env = service_env(
        **NODE_ENV,
        LIGHTFAST_DATA_DIR=str(data_dir),
        LIGHTFAST_MEDIA_ROOT=str(media),
        SECRET_KEY=str(settings.SECRET_KEY),
        LIGHTFAST_MODEL_BASE_URL=fake.base_url,
    )
    # The node's web process as the launcher starts it, on a listening socket of its own.
    listener = web_listen_socket("127.0.0.1", 0)
    port = int(listener.getsockname()[1])
    web = subprocess.Popen(
        web_server_argv(server=web_server_default(), fd=listener.fileno()),
        env=env,
        cwd=PROJECT_ROOT,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        pass_fds=(listener.fileno(),),
    )
    listener.close()  # the web process holds its copy
    hostname = f"{name}-{uuid.uuid4().hex[:8]}@scale-out"
    extra = ["--beat", "--schedule", str(data_dir / "celerybeat-schedule")] if beat else []
    worker = subprocess.Popen(
        celery_worker_argv(threads=2, hostname=hostname, extra=extra),
        env=env,
        cwd=PROJECT_ROOT,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )
    return Node(port=port, name=name, web=web, worker=worker, hostname=hostname)


@pytest.fixture
def nodes(alice: Any, tmp_path: Path, fault_media: Path) -> Iterator[tuple[Node, Node]]:
    fake = FakeOpenAI().start()
    # Beat runs once in a deployment: here on node A.
    a = start_node("node-a", tmp_path, fault_media, fake, beat=True)
    b = start_node("node-b", tmp_path, fault_media, fake, beat=False)
    try:
        for node in (a, b):
            wait_until(
                lambda node=node: bool(app.control.ping(destination=[node.hostname], timeout=0.5)),
                60,
                node.name,
            )
            node.wait_healthy()
        yield a, b
    finally:
        a.stop()
        b.stop()
        fake.stop()


@pytest.fixture
def tenant(alice: Any) -> Any:
    Organization.objects.filter(pk=alice.organization.pk).update(
        api_rate="100000/m", concurrent_runs=1000, runs_per_month=10**9, run_wall_ms=60_000
    )
    _ready_bundle(alice.organization, WEATHER, "weather")
    return alice


def test_two_nodes_share_the_runs_stream_each_others_and_fail_over(
    nodes: tuple[Node, Node], tenant: Any
) -> None:
    a, b = nodes
    key = tenant.keys["all"]
    outcome = Outcome(experiment="two nodes, node B's worker killed")
    started = time.monotonic()

    # Runs started through either node's API spread over both workers (two at a time each), and a
    # websocket on node A streams every one of them, whichever node runs it.
    streams = RunStreams(web=a, key=key)
    spread = [
        (a if index % 2 else b).start_run(key, AGENT, f"#slow=0.5 {uuid.uuid4()}") for index in range(8)
    ]
    streams.follow(AGENT, spread)
    streams.wait(60)
    streams.close()
    check_runs(streams, outcome)
    ran_on = {run.worker for run in Run.objects.filter(pk__in=spread)}
    assert ran_on == {a.hostname, b.hostname}, ran_on
    assert Run.objects.filter(pk__in=spread, worker=b.hostname).exists()  # so A's websocket streamed B's runs

    # Node A stops taking runs for a moment; node B takes two that hang (the model never answers their
    # first request), three more wait in the broker. Then node B's worker dies.
    assert app.control.cancel_consumer("runs", destination=[a.hostname], reply=True)
    failover = RunStreams(web=a, key=key)
    hanging = [b.start_run(key, AGENT, f"#hang=1 {uuid.uuid4()}") for _ in range(2)]
    waiting = [b.start_run(key, AGENT, f"hello {uuid.uuid4()}") for _ in range(3)]
    failover.follow(AGENT, hanging + waiting)
    wait_until(
        lambda: (
            Run.objects.filter(pk__in=hanging, worker=b.hostname, events__type="text-delta")
            .distinct()
            .count()
            == 2
        ),
        30,
        "node B running the hanging runs",
    )
    assert b.worker is not None
    os.killpg(b.worker.pid, signal.SIGKILL)
    b.worker.wait()
    assert app.control.add_consumer("runs", destination=[a.hostname], reply=True)
    try:
        failover.wait(60)
    finally:
        failover.close()
    runs = check_runs(failover, outcome)
    for run_id in hanging:
        # Taken back from the lost worker (its heartbeats stopped) and run again, on node A.
        run = runs[run_id]
        assert (run.status, run.attempt, run.worker) == (RunStatus.SUCCEEDED, 2, a.hostname), (
            run.error_message
        )
    for run_id in waiting:
        run = runs[run_id]
        assert (run.status, run.worker) == (RunStatus.SUCCEEDED, a.hostname), run.error_message
    outcome.seconds = round(time.monotonic() - started, 1)
    record(outcome)
