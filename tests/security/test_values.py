"""Lone surrogates and NUL from a tool become U+FFFD where they enter the host (values.py),
so the CLI, REST, SSE, websocket and the database (SQLite here, PostgreSQL in CI) all hold them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from execution.selectors import run_events_after
from tests.bundles import uploaded_version
from tests.execution.live_transport import asgi_server_fixture, recv_until_end, ws_connect  # noqa: F401
from tests.execution.test_sse import sse_events
from tests.execution.test_websocket import start_over_ws

ROOT = Path(__file__).resolve().parents[2]
VALUES = ROOT / "tests" / "fixtures" / "security" / "values.mjs"
EXPECTED = {
    "lone": "a\ufffdb",
    "trail": "c\ufffd",
    "nul": "x\ufffdy",
    "key\ufffd": 1,
    "nul\ufffdkey": 2,
    "pair": "\U0001f600",  # a well-formed pair is kept
    "list": ["\ufffd", "ok"],
}
LOG = "lone \ufffd and nul \ufffd in a log"


def test_bundle_invoke_cli_prints_the_cleaned_values() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "bundle",
            "invoke",
            str(VALUES),
            "--agent",
            "values",
            "--tool",
            "weird",
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr  # was a UnicodeEncodeError
    result = json.loads(done.stdout.decode("utf-8"))
    assert result["output"] == EXPECTED
    assert result["logs"] == [{"level": "log", "message": LOG}]


@pytest.mark.django_db
def test_rest_tool_invoke_answers_the_cleaned_values(
    alice: Any, api: Any, settings: Any, tmp_path: Path
) -> None:
    settings.MEDIA_ROOT = str(tmp_path / "media")
    uploaded_version(alice.organization, VALUES, slug="values")
    response = api.post(
        "/api/v1/bundles/values/tools/weird/invoke", json={"input": {}}, key=alice.keys["all"]
    )
    assert response.status_code == 200, response.content
    response.content.decode("utf-8")  # strictly UTF-8 on the wire
    assert response.json()["output"] == EXPECTED


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_run_events_hold_the_values_over_websocket_rest_and_sse(
    alice: Any,
    api: Any,
    media_root: Any,
    celery_worker: Any,
    asgi_server: Any,
) -> None:
    uploaded_version(alice.organization, VALUES, slug="values")
    with ws_connect(asgi_server, "/ws/v1/chat/values/values/", key=alice.keys["all"]) as ws:
        run_id = start_over_ws(ws, "Odd strings? weird {}", session="values-1")
        frames = recv_until_end(ws, run_id)
    output = next(frame for frame in frames if frame["type"] == "tool-output-available")
    assert output["output"] == EXPECTED
    assert frames[-1]["data"]["status"] == "succeeded"
    stored = [event.chunk() for event in run_events_after(run_id, 0)]  # read back from the database
    assert next(c for c in stored if c["type"] == "tool-output-available")["output"] == EXPECTED

    events = api.get(f"/api/v1/runs/{run_id}/events?after=0", key=alice.keys["read"])
    assert events.status_code == 200, events.content  # was a 500
    rest = [{"run": run_id, "seq": e["seq"], **e["chunk"]} for e in events.json()["events"]]
    # Live streams skip the tool's private log lines (the agent did not opt in); REST has them all.
    assert [frame for frame in rest if not frame.get("private")] == frames
    assert any(frame["type"] == "data-log" for frame in rest if frame.get("private"))

    headers = {"Authorization": f"Bearer {alice.keys['all']}", "Last-Event-ID": f"{run_id}:0"}
    with httpx.Client(base_url=asgi_server.http, timeout=60) as client:
        replay = client.get("/api/v1/chat/values/values", headers=headers)
    assert replay.status_code == 200
    chunks = [json.loads(event["data"]) for event in sse_events(replay.content.decode("utf-8"))[:-1]]
    assert next(c for c in chunks if c["type"] == "tool-output-available")["output"] == EXPECTED
