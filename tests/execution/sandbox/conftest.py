"""Run the sandbox suite against a chosen backend: LIGHTFAST_TEST_SANDBOX_BACKEND=local (default) or docker.

With `docker`, the tests need a Docker engine (DOCKER_HOST) and the runner image; without
one they skip saying how to get one, and under CI=true that skip is a failure instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

HOW_TO_RUN = (
    "needs a Docker engine and the runner image: run .ci/docker-tests, or start dockerd, "
    "export DOCKER_HOST=unix://..., run `python manage.py sandbox build-image` and "
    "LIGHTFAST_TEST_SANDBOX_BACKEND=docker pytest tests/execution/sandbox"
)


def docker_unavailable_reason() -> str | None:
    """Why the docker backend cannot run here (None when an engine and the image are there)."""
    from execution.sandbox.docker_backend import docker_status

    status = docker_status()
    if status.get("docker") != "ok" and status.get("engine") != "ok":
        return f"{status.get('engine')}; {HOW_TO_RUN}"
    return None


def docker_requested() -> bool:
    """Whether this run asked for the docker backend (LIGHTFAST_TEST_SANDBOX_BACKEND=docker)."""
    return os.environ.get("LIGHTFAST_TEST_SANDBOX_BACKEND") == "docker"


def skip_or_fail(reason: str) -> None:
    """Skip; but when CI asked for the docker run and it cannot happen, that is a failure."""
    if os.environ.get("CI") == "true" and docker_requested():
        pytest.fail(f"docker sandbox tests requested in CI but cannot run: {reason}", pytrace=False)
    pytest.skip(reason=reason)


@pytest.fixture(scope="session")
def sandbox_backend() -> str:
    """The backend under test, from LIGHTFAST_TEST_SANDBOX_BACKEND."""
    name = os.environ.get("LIGHTFAST_TEST_SANDBOX_BACKEND") or "local"
    if name == "docker":
        reason = docker_unavailable_reason()
        if reason:
            skip_or_fail(reason)
    return name


@pytest.fixture(autouse=True)
def _use_sandbox_backend(sandbox_backend: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Route every api call (and `manage.py bundle` subprocess) of the test to the chosen backend."""
    monkeypatch.setenv("LIGHTFAST_SANDBOX_BACKEND", sandbox_backend)
    yield
