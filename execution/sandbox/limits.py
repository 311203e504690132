"""Per-execution resource limits of the sandbox, as one immutable value passed to the engine."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

MIB = 1024 * 1024
KIB = 1024


@dataclass(frozen=True)
class Limits:
    """What one bundle load or tool call may use; every field is a positive integer."""

    memory_mb: int = 64
    cpu_ms: int = 5000
    wall_ms: int = 30000
    # QuickJS checks its own stack use against this; it must stay well under the real thread stack
    # (8 MiB main thread here): 1 MiB allows ~10k frames of ordinary recursion and was safe up to
    # 4 MiB when measured (tests/execution/sandbox/test_engine_hostile.py::test_stack_limit_is_safe).
    stack_kb: int = 1024
    output_bytes: int = 1 * MIB
    log_bytes: int = 256 * KIB
    concurrent_fetches: int = 4
    max_fetches: int = 50
    fetch_timeout_ms: int = 10000
    fetch_response_bytes: int = 5 * MIB
    fetch_request_bytes: int = 1 * MIB

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"limit {field.name} must be a positive integer, got {value!r}")
        if self.stack_kb > 4096:
            raise ValueError("limit stack_kb must be at most 4096 (half the 8 MiB thread stack)")

    def to_dict(self) -> dict[str, int]:
        """Return the limits as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Limits:
        """Build limits from a dict; missing keys take defaults, unknown keys are rejected."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown limit(s): {', '.join(unknown)}")
        return cls(**data)
