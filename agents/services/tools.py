"""Calling one tool of a bundle version in the sandbox: `tool_call` (shared by the REST invoke and the agent
loop) and `tool_invoke`, the REST invoke with its quota check and audit entry."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from agents.errors import (
    AmbiguousTool,
    UnknownTool,
    VersionNotRunnable,
)
from agents.models import Bundle, BundleVersion
from agents.selectors import (
    SandboxSettings,
    sandbox_settings_for,
    tool_limits_for,
    transformed_bundle_for,
    version_bundle_key,
)
from execution.sandbox import api as sandbox_api
from organizations.models import Organization
from organizations.quotas import quota_check_sandbox_cpu, quota_meter_sandbox_cpu
from organizations.services import Actor, audit_record


def tool_call(
    *,
    organization: Organization,
    version: BundleVersion,
    agent_key: str,
    tool: str,
    tool_input: Any,
    context: dict[str, Any],
    timeout_ms: int | None = None,
    cancel: threading.Event | None = None,
    sandbox_settings: SandboxSettings | None = None,
) -> sandbox_api.InvokeResult:
    """One sandbox call of a tool with the organization's variables, egress rules, limits and backend.

    `timeout_ms` lowers the plan's wall limit (a run passes what is left of its own); the
    organization's sandbox settings are read unless the caller read them just before.
    """
    if sandbox_settings is None:
        sandbox_settings = sandbox_settings_for(organization)
    return sandbox_api.invoke(
        transformed_bundle_for(version),
        agent=agent_key,
        tool=tool,
        input=tool_input,
        context=context,
        env=sandbox_settings.env,
        egress=sandbox_settings.egress,
        limits=tool_limits_for(organization, timeout_ms=timeout_ms),
        bundle_key=version_bundle_key(version),
        cancel=cancel,
        backend=sandbox_settings.backend,
    )


def tool_invoke(
    *,
    organization: Organization,
    bundle: Bundle,
    tool: str,
    agent: str | None,
    input: Any,
    actor: Actor,
    timeout_ms: int | None = None,
) -> dict[str, Any]:
    """Run a tool of the active version in the sandbox; answers `{ok, output, error, logs, usage}`."""
    version = bundle.active_version
    if version is None:
        raise VersionNotRunnable(
            f"Bundle {bundle.slug!r} has no active version that is ready to run.",
            detail={"bundle": bundle.slug},
        )
    version = BundleVersion.objects.get(pk=version.pk)
    if not version.is_runnable:
        raise VersionNotRunnable(
            f"Version {version.number} of {bundle.slug!r} is {version.status} and cannot run.",
            detail={"bundle": bundle.slug, "number": version.number, "status": version.status},
        )
    agent_key = _agent_for_tool(version=version, tool=tool, agent=agent)
    quota_check_sandbox_cpu(organization=organization)
    result = tool_call(
        organization=organization,
        version=version,
        agent_key=agent_key,
        tool=tool,
        tool_input=input,
        context={"sessionId": str(uuid.uuid4()), "resourceId": organization.public_id},
        timeout_ms=timeout_ms,
    )
    answer = result.to_dict()
    usage = answer.get("usage") or {}
    cpu_ms = int(usage.get("cpu_ms") or 0)
    quota_meter_sandbox_cpu(organization=organization, cpu_ms=cpu_ms)
    error = answer.get("error") or {}
    audit_record(
        actor=actor,
        action="tool.invoked",
        organization=organization,
        target=version,
        metadata={
            "bundle": bundle.slug,
            "number": version.number,
            "agent": agent_key,
            "tool": tool,
            "ok": bool(answer.get("ok")),
            "error_type": error.get("type") if error else None,
        },
    )
    return answer


def _agent_for_tool(*, version: BundleVersion, tool: str, agent: str | None) -> str:
    agents = version.agents()
    if agent is not None:
        spec = agents.get(agent)
        if spec is None:
            raise UnknownTool(
                f"No agent {agent!r} in version {version.number}.",
                detail={"agent": agent, "agents": sorted(agents)},
            )
        if not spec.has_tool(tool):
            raise UnknownTool(
                f"Agent {agent!r} has no tool {tool!r}.",
                detail={"agent": agent, "tool": tool, "tools": spec.tool_names},
            )
        return agent
    owners = [key for key, spec in agents.items() if tool in spec.tools]
    if not owners:
        raise UnknownTool(f"No agent of version {version.number} has a tool {tool!r}.", detail={"tool": tool})
    if len(owners) > 1:
        raise AmbiguousTool(
            f"Agents {', '.join(owners)} all have a tool {tool!r}; name one in `agent`.",
            detail={"agents": owners},
        )
    return owners[0]
