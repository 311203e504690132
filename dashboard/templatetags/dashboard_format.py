"""Template filters of the dashboard's pages: JSON as readable text, milliseconds as people read them."""

from __future__ import annotations

import json
from typing import Any

from django import template

register = template.Library()


@register.filter
def pretty_json(value: Any) -> str:
    """A JSON value indented for a <pre> block (strings too, quoted, so a value's type shows)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


@register.filter
def duration_ms(value: Any) -> str:
    """Milliseconds as `850 ms`, `1.2 s` or `3 min 5 s`."""
    try:
        ms = float(value)
    except (TypeError, ValueError):
        return ""
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"
