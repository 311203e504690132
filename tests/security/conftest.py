"""The security suite: regression tests for each finding and the escape and abuse corpus.

Sandbox tests here run against the backend LIGHTFAST_TEST_SANDBOX_BACKEND names (local by
default, docker in .ci/docker-tests), with the same fixtures as tests/execution/sandbox.
"""

from tests.execution.sandbox.conftest import _use_sandbox_backend, sandbox_backend  # noqa: F401
