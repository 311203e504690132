"""schemathesis against the live server (the launcher's ASGI server and a Celery worker on the test
database): every check, stateful links included, a bounded number of examples per operation; not one failure.

`LIGHTFAST_FUZZ_EXAMPLES` (default 5) sets the examples per operation; by hand, against a running stack:
`st --config-file tests/api_fuzz/schemathesis.toml run http://HOST/api/v1/schema/ -H "Authorization:
Bearer KEY" --checks all`. What the server checks beyond its schema is listed in schemathesis.toml.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from organizations.models import Organization
from tests.bundles import uploaded_version
from tests.execution.live_transport import start_asgi_server
from tests.services import PROJECT_ROOT, start_celery_worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]

CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES = int(os.environ.get("LIGHTFAST_FUZZ_EXAMPLES", "5"))


def test_the_live_api_answers_as_its_schema_says(
    alice: Any, media_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Far from the limits: a 429 would only hide what the request reached.
    Organization.objects.filter(pk=alice.organization.pk).update(
        api_rate="1000000/m", concurrent_runs=10_000, runs_per_month=10**9
    )
    uploaded_version(alice.organization)  # a ready bundle: `weather`, agent `weather`
    # schemathesis sends requests without credentials (ignored_auth): not a brute force to block.
    monkeypatch.setenv("LIGHTFAST_AUTH_FAILURE_RATE", "1000000/m")
    worker = start_celery_worker()
    server = start_asgi_server()
    try:
        result = subprocess.run(
            [
                str(Path(sys.executable).with_name("st")),
                "--no-color",
                "--config-file",
                str(CONFIG),
                "run",
                f"{server.http}/api/v1/schema/",
                "--header",
                f"Authorization: Bearer {alice.keys['all']}",
                "--checks",
                "all",
                "--max-examples",
                str(EXAMPLES),
                "--seed",
                "1",
                "--request-timeout",
                "60",
            ],
            cwd=tmp_path,  # its caches (.hypothesis, .schemathesis) stay out of the project
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
            capture_output=True,
            text=True,
            timeout=540,
        )
    finally:
        server.stop()
        worker.stop()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-20000:]
    # Every operation of the schema was exercised (none skipped for want of a strategy).
    selected = re.search(r"Selected: (\d+)/(\d+)", output)
    tested = re.search(r"Tested: (\d+)", output)
    assert selected and tested, output[-5000:]
    assert selected.group(1) == selected.group(2) == tested.group(1), output[-5000:]
