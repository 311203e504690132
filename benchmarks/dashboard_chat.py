"""Dashboard chat benchmark: time to first token in the browser, from pressing Send to the answer's text.

Prints one JSON object per line. Run from the project root:
`.venv/bin/python benchmarks/dashboard_chat.py [--messages 20] [--warmup 3]`.

It builds a scratch stack of its own (data directory in /tmp, SQLite unless DATABASE_URL is set, a
private redis unless REDIS_URL is set; the stack of benchmarks/runs.py), uploads
../shared/bundles/weather.mjs, builds and collects the dashboard's static files, starts the embedded
launcher's worker and web layout (one Celery process and one web process per core, the web processes
sharing one listening socket), and drives the chat page in
Debian's headless Chromium (tests/browser.py) with Playwright. The model is the offline demo model.

The figure is the page's own User Timing measure `lightfast:time-to-first-token`
(dashboard/assets/chat.js): from the Send button's submit to the moment the first text of the answer
is put in the page, which covers the AI SDK's POST to /api/v1/chat/{bundle}/{agent}, run_start,
the Celery hand-off, the worker's claim and model step, the event's notification and the SSE stream.
The messages are sent one after another in one chat (each turn posts the whole conversation, as the
AI SDK does); the first `--warmup` ones are not counted. The machine is shared and small: run it
more than once and compare medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.runs import emit, percentile, setup_stack, start_worker, stop_worker, wait_ready  # noqa: E402

MEASURE = "lightfast:time-to-first-token"
MARK_SEND = "lightfast:send"
TARGET_P50_MS = 50


def collect_static(static_root: Path) -> None:
    """The dashboard's assets built and every app's static files collected, as `make setup` does."""
    subprocess.run(["npm", "run", "--silent", "build:dashboard"], cwd=ROOT, check=True)
    env = dict(os.environ, LIGHTFAST_STATIC_ROOT=str(static_root))
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--clear", "--verbosity", "0"],
        cwd=ROOT,
        env=env,
        check=True,
    )


def start_web(port: int) -> tuple[list[Any], list[subprocess.Popen[bytes]]]:
    """The launcher's web tier on the scratch stack (the environment setup_stack prepared):
    `web_processes_default()` uvicorn processes, each on its own socket of one SO_REUSEPORT group,
    as `manage.py lightfast up` runs it."""
    import socket

    from lightfast_cloud.launcher import web_listen_sockets, web_processes_default, web_server_argv

    listeners = web_listen_sockets("127.0.0.1", port, web_processes_default())
    processes = [
        subprocess.Popen(
            web_server_argv(server="uvicorn", fd=listener.fileno(), family=listener.family),
            cwd=ROOT,
            env=dict(os.environ),
            pass_fds=(listener.fileno(),),
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        for listener in listeners
    ]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"a web process exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as probe:
                probe.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                if probe.recv(64):
                    return listeners, processes
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the web processes did not answer")


def member_session(organization: Any) -> str:
    """A dashboard session of a new owner of the organization (Django's own login)."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    from organizations.models import Membership, Role

    user = get_user_model().objects.create_user(username=f"bench-{os.getpid()}@example.com")
    Membership.objects.create(organization=organization, user=user, role=Role.OWNER)
    client = Client()
    client.force_login(user)
    return str(client.cookies[settings.SESSION_COOKIE_NAME].value)


def wait_for_answer(page: Any, timeout_s: float = 30.0) -> float:
    """The time to first token of the message just sent, once its answer ended. Polled from here: the
    page's CSP (script-src 'self') refuses the string evaluation `wait_for_function` relies on."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        took = page.evaluate(
            f"""document.getElementById("chat").dataset.status === "ready"
            ? performance.getEntriesByName({MEASURE!r}).at(-1)?.duration ?? null : null"""
        )
        if took is not None:
            return float(took)
        time.sleep(0.02)
    raise RuntimeError("no answer in time")


def measure_chat(base_url: str, session: str, messages: int, warmup: int) -> list[float]:
    """Send `warmup + messages` messages in one chat; the time to first token of the counted ones (ms)."""
    from playwright.sync_api import sync_playwright

    from tests.browser import chromium_path

    executable = chromium_path()
    if executable is None:
        raise SystemExit("Debian's chromium is not installed (apt-get install chromium)")
    from django.conf import settings

    timings: list[float] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        context = browser.new_context(base_url=base_url)
        context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": base_url}])
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto("/chat/weather/weather/")
        for number in range(warmup + messages):
            page.evaluate(f"performance.clearMeasures({MEASURE!r})")
            page.get_by_label("Message").fill(f"Hello, message {number}.")
            page.get_by_role("button", name="Send").click()
            took = wait_for_answer(page)
            # After Send: when the AI SDK called fetch, when the request left, when the response's headers
            # arrived (sent once the run exists).
            phases = page.evaluate(
                f"""(() => {{
                    const send = performance.getEntriesByName({MARK_SEND!r}).at(-1).startTime;
                    const post = performance.getEntriesByType("resource")
                        .filter((entry) => entry.name.endsWith("/api/v1/chat/weather/weather")).at(-1);
                    return [post.fetchStart - send, post.requestStart - send, post.responseStart - send];
                }})()"""
            )
            page.evaluate("performance.clearResourceTimings()")
            if number >= warmup:
                timings.append(float(took))
                emit(
                    figure="dashboard_chat_first_token_ms",
                    message=number - warmup + 1,
                    ms=round(took, 2),
                    fetch_start_ms=round(phases[0], 2),
                    request_sent_ms=round(phases[1], 2),
                    response_headers_ms=round(phases[2], 2),
                )
        browser.close()
        if errors:
            raise RuntimeError(f"the page failed: {errors}")
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20, help="messages measured")
    parser.add_argument("--warmup", type=int, default=3, help="messages sent first, not measured")
    args = parser.parse_args()

    # The demo model answers: no provider of the environment's.
    for name in ("LIGHTFAST_MODEL_BASE_URL", "LIGHTFAST_MODEL_MAP"):
        os.environ.pop(name, None)
    data_dir = Path(tempfile.mkdtemp(prefix="lf-bench-dashboard-chat-"))
    os.environ["LIGHTFAST_STATIC_ROOT"] = str(data_dir / "static")
    organization, version, redis = setup_stack(data_dir)
    from django.conf import settings

    from lightfast_cloud.launcher import worker_processes_default, worker_threads_default
    from tests.services import free_port

    collect_static(data_dir / "static")
    processes, threads = worker_processes_default(), worker_threads_default()
    workers = [start_worker(threads, {}, f"chat-{number}") for number in range(processes)]
    port = free_port()
    listeners, web = start_web(port)
    try:
        wait_ready(version)
        emit(
            figure="setup",
            database=settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1],
            cores=os.cpu_count(),
            worker_processes=processes,
            web_processes=len(web),
            worker_threads=threads,
            browser="chromium (headless)",
            model="demo",
        )
        timings = measure_chat(
            f"http://127.0.0.1:{port}", member_session(organization), args.messages, args.warmup
        )
        emit(
            figure="dashboard_chat_time_to_first_token_ms",
            messages=len(timings),
            p50=round(percentile(timings, 0.5), 2),
            p95=round(percentile(timings, 0.95), 2),
            mean=round(statistics.mean(timings), 2),
            min=round(min(timings), 2),
            max=round(max(timings), 2),
            target_p50=TARGET_P50_MS,
        )
    finally:
        for process in web:
            process.terminate()
        for process in web:
            process.wait(30)
        for listener in listeners:
            listener.close()
        for worker in workers:
            stop_worker(worker)
        if redis is not None:
            redis.stop()


if __name__ == "__main__":
    main()
