"""The sandbox's error type: one exception carrying a stable taxonomy code shown to users."""

from __future__ import annotations

from typing import Any

SYNTAX_ERROR = "syntax_error"
INVALID_BUNDLE = "invalid_bundle"
UNKNOWN_TOOL = "unknown_tool"
INVALID_INPUT = "invalid_input"
TOOL_ERROR = "tool_error"
TIMEOUT = "timeout"
CPU_LIMIT = "cpu_limit"
MEMORY_LIMIT = "memory_limit"
STACK_OVERFLOW = "stack_overflow"
OUTPUT_LIMIT = "output_limit"
EGRESS_DENIED = "egress_denied"
SANDBOX_CRASH = "sandbox_crash"
CANCELLED = "cancelled"
QUOTA_EXCEEDED = "quota_exceeded"
RATE_LIMITED = "rate_limited"

CODES: frozenset[str] = frozenset(
    {
        SYNTAX_ERROR,
        INVALID_BUNDLE,
        UNKNOWN_TOOL,
        INVALID_INPUT,
        TOOL_ERROR,
        TIMEOUT,
        CPU_LIMIT,
        MEMORY_LIMIT,
        STACK_OVERFLOW,
        OUTPUT_LIMIT,
        EGRESS_DENIED,
        SANDBOX_CRASH,
        CANCELLED,
        QUOTA_EXCEEDED,
        RATE_LIMITED,
    }
)

# Errors after which the JS context may be inconsistent (interrupted mid-operation, heap exhausted).
LIMIT_CODES: frozenset[str] = frozenset({TIMEOUT, CPU_LIMIT, MEMORY_LIMIT, CANCELLED, SANDBOX_CRASH})


class SandboxError(Exception):
    """A classified failure of a bundle or a call, with a taxonomy code, a message and JSON detail."""

    def __init__(self, code: str, message: str, detail: dict[str, Any] | None = None) -> None:
        if code not in CODES:
            raise ValueError(f"unknown sandbox error code {code!r}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.detail: dict[str, Any] = dict(detail) if detail else {}
        # What the host measured of a call that ended in this error (e.g. cpu_ms it charges).
        self.usage: dict[str, Any] = {}

    def to_dict(self) -> dict[str, Any]:
        """Return the error as the API and runner protocol show it."""
        return {"type": self.code, "message": self.message, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SandboxError:
        """Rebuild an error from `to_dict()` output (e.g. a runner frame); unknown types become crashes."""
        code = data.get("type")
        message = str(data.get("message", ""))
        detail = data.get("detail") if isinstance(data.get("detail"), dict) else None
        if code not in CODES:
            return cls(SANDBOX_CRASH, f"unclassified error {code!r}: {message}", detail)
        return cls(str(code), message, detail)
