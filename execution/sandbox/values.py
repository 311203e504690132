"""The one rule for text the host accepts from code it does not trust (sandbox frames, model providers).

Lone UTF-16 surrogates (a JS string can hold "\\ud800") and NUL cannot travel everywhere a value
goes afterwards: a lone surrogate is not UTF-8 (the CLI's stdout, SSE and websocket frames, HTTP
bodies refuse it) and PostgreSQL's jsonb refuses \\u0000. Both become U+FFFD (the replacement
character), in object keys and in string values, where the value enters the host; everything
downstream can then store and send it. Two keys that differ only there become one (the later wins).
"""

from __future__ import annotations

import re
from typing import Any

REPLACEMENT = "\ufffd"
# After JSON decoding, a well-formed surrogate pair is one code point: any surrogate left is lone.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def clean_text(text: str) -> str:
    """`text` with every lone surrogate and NUL replaced by U+FFFD."""
    if _UNSTORABLE.search(text) is None:
        return text
    return _UNSTORABLE.sub(REPLACEMENT, text)


def clean_value(value: Any) -> Any:
    """A copy of a JSON value (dicts, lists, str, numbers) with `clean_text` applied to every key and string.

    Iterative, so any nesting depth is safe (no Python recursion on a depth someone else chose).
    """
    top = _cleaned_node(value)
    stack = [top] if isinstance(top, (dict, list)) else []
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            items = list(node.items())
            node.clear()
            for key, item in items:
                child = _cleaned_node(item)
                node[clean_text(str(key))] = child
                if isinstance(child, (dict, list)):
                    stack.append(child)
        else:
            for index, item in enumerate(node):
                child = _cleaned_node(item)
                node[index] = child
                if isinstance(child, (dict, list)):
                    stack.append(child)
    return top


def _cleaned_node(value: Any) -> Any:
    """A string cleaned, a container shallow-copied (its items are cleaned by the caller), else as is."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value
