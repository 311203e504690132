"""OpenAPI schema generation: operation summaries, the `servers` entry and the chat SSE routes."""

from __future__ import annotations

import inspect
from typing import Any

from drf_spectacular.openapi import AutoSchema
from rest_framework.fields import CharField

SSE_DESCRIPTION = (
    "The AI SDK UI message stream as Server-Sent Events: each event is `id: <run>:<seq>` and "
    "`data: <chunk JSON>` (`start`, `start-step`, `text-delta`, `tool-input-available`, …, "
    "`finish`, `data-status`), ending with `data: [DONE]`. Header `x-vercel-ai-ui-message-stream: v1`."
)


# A character Python's str.strip() (DRF's trim) keeps: the same whitespace set, spelled for ECMA regexes.
NOT_ONLY_WHITESPACE = (
    "[^\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
)


class LightfastAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema; every operation gets a summary (the handler docstring's first line),
    and request bodies say what the server takes, no more (see `_map_serializer`)."""

    def _map_serializer(self, serializer: Any, direction: str, bypass_extensions: bool = False) -> Any:
        """A strict serializer's request body admits no other field (it refuses unknown ones)."""
        from lightfast_cloud.api_input import StrictSerializer

        schema = super()._map_serializer(serializer, direction, bypass_extensions)
        if direction == "request" and isinstance(serializer, StrictSerializer):
            schema["additionalProperties"] = False
        return schema

    def _map_serializer_field(self, field: Any, direction: str, bypass_extensions: bool = False) -> Any:
        """A text field that may not be blank says so: `minLength: 1`, and a non-space character
        when DRF trims whitespace before its blank check."""
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if (
            direction == "request"
            and isinstance(field, CharField)
            and not field.allow_blank
            and schema.get("type") == "string"
            and "enum" not in schema
        ):
            schema.setdefault("minLength", 1)
            if field.trim_whitespace:
                schema.setdefault("pattern", NOT_ONLY_WHITESPACE)
        return schema

    def get_summary(self) -> str | None:
        """`extend_schema(summary=…)`, else the first line of the handler's docstring."""
        summary = super().get_summary()
        if summary:
            return summary
        handler = getattr(self.view, self.method.lower(), None)
        doc = inspect.getdoc(handler) if handler is not None else None
        if doc:
            return doc.strip().splitlines()[0].rstrip(".")
        return self.get_operation_id().replace("_", " ").capitalize()


def _error_ref(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }


def _chat_error(description: str) -> dict[str, Any]:
    """A chat route's error: JSON, or the readable message as text/plain for an AI SDK transport.

    A body with `trigger` that does not ask for JSON gets the message as text (DefaultChatTransport
    shows the body as `chat.error.message`) and the error type in `X-Lightfast-Error`.
    """
    response = _error_ref(description)
    response["content"]["text/plain"] = {"schema": {"type": "string"}}
    response["headers"] = {
        "X-Lightfast-Error": {
            "description": "The error type, when the body is text/plain.",
            "schema": {"type": "string"},
        }
    }
    return response


def _sse(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {
            "x-vercel-ai-ui-message-stream": {"schema": {"type": "string", "enum": ["v1"]}},
        },
        "content": {"text/event-stream": {"schema": {"type": "string", "description": SSE_DESCRIPTION}}},
    }


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


CHAT_SECURITY: list[dict[str, list[str]]] = [{"apiKey": []}, {"clientToken": []}, {"session": []}]
CHAT_ERRORS = {
    "400": _chat_error(
        "Invalid body or resume point (`invalid_input`, `malformed_json`), or tool results and approvals "
        "for no call the chat waits for (`unknown_tool_call`)."
    ),
    "401": _chat_error("Missing, invalid, revoked or expired credentials."),
    "403": _chat_error(
        "The credentials lack the scope, a client token is for another agent (`permission_denied`), "
        "or the page's origin is not allowed (`origin_not_allowed`)."
    ),
    "404": _chat_error("No such bundle, agent, run or chat in your organization (`not_found`)."),
    "429": _chat_error("Rate limited (`rate_limited`)."),
}
USE_CHAT_BODY = {
    "type": "object",
    "required": ["messages"],
    "properties": {
        "id": {"type": "string", "description": "The chat id; names the chat session."},
        "messages": {"type": "array", "items": {"type": "object"}, "description": "AI SDK UI messages."},
        "trigger": {"type": "string", "enum": ["submit-message", "regenerate-message"]},
        "messageId": {"type": ["string", "null"]},
    },
    "additionalProperties": True,
}


def _chat_paths() -> dict[str, Any]:
    bundle = _path_param("bundle", "The bundle's slug.")
    agent = _path_param("agent", "The agent's key.")
    return {
        "/api/v1/chat/{bundle}/{agent}": {
            "post": {
                "operationId": "chat_stream",
                "summary": "Start a chat turn and stream it (AI SDK `useChat`)",
                "description": "Takes the body `useChat`'s DefaultChatTransport posts and streams the run. "
                "A list whose last message is the assistant's continues that answer with the client-side "
                "tool results and approval responses it carries (the same message id streams on). "
                "Authenticate with an API key, or from a browser with a client token "
                "(`/api/v1/client-tokens`).",
                "tags": ["chat"],
                "parameters": [bundle, agent],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": USE_CHAT_BODY}},
                },
                "security": CHAT_SECURITY,
                "responses": {"200": _sse("The run's UI message stream."), **CHAT_ERRORS},
            },
            "get": {
                "operationId": "chat_resume",
                "summary": "Resume a run's stream after an event",
                "description": "Send `Last-Event-ID: <run>:<seq>` (or `?run=&after=`): the events after it.",
                "tags": ["chat"],
                "parameters": [
                    bundle,
                    agent,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "description": "`<run>:<seq>` resumes there (`run` and `after` are not read); "
                        "any other id is ignored.",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "run",
                        "in": "query",
                        "required": True,
                        "description": "The run to resume (required unless `Last-Event-ID` is sent).",
                        "schema": {"type": "string", "format": "uuid"},
                    },
                    {
                        "name": "after",
                        "in": "query",
                        "required": False,
                        "description": "Resume after this seq (default 0).",
                        "schema": {"type": "integer", "minimum": 0, "maximum": 999_999_999},
                    },
                ],
                "security": CHAT_SECURITY,
                "responses": {"200": _sse("The rest of the run's stream."), **CHAT_ERRORS},
            },
        },
        "/api/v1/chat/{bundle}/{agent}/{chat_id}/stream": {
            "get": {
                "operationId": "chat_reconnect",
                "summary": "Reconnect to a chat's active stream",
                "description": "The AI SDK's `resume`: the chat's running run from its first event.",
                "tags": ["chat"],
                "parameters": [bundle, agent, _path_param("chat_id", "The chat id.")],
                "security": CHAT_SECURITY,
                "responses": {
                    "200": _sse("The active run's stream."),
                    "204": {"description": "No run is active in this chat."},
                    **CHAT_ERRORS,
                },
            }
        },
    }


def _nulls_as_31(node: Any) -> None:
    """Say "or null" the OpenAPI 3.1 way where drf-spectacular or DRF left 3.0's `nullable`.

    `{type: T, nullable: true}` (DRF's pagination schemas) becomes `type: [T, "null"]`; a nullable
    value of any type (`oneOf: [{}, {type: null}]`, or `nullable` without a type) becomes `{}`,
    which admits null already (and a `oneOf` of two schemas that both admit null admits none).
    """
    if isinstance(node, list):
        for item in node:
            _nulls_as_31(item)
        return
    if not isinstance(node, dict):
        return
    if "nullable" in node:
        nullable = node.pop("nullable")
        kind = node.get("type")
        if nullable is True and isinstance(kind, str):
            node["type"] = [kind, "null"]
        elif nullable is True and kind is None:
            refs = node.pop("allOf", None)
            if refs:
                node["oneOf"] = [*refs, {"type": "null"}]
    one_of = node.get("oneOf")
    if isinstance(one_of, list) and len(one_of) == 2 and {} in one_of and {"type": "null"} in one_of:
        del node["oneOf"]
    for value in node.values():
        _nulls_as_31(value)


# What any tenant route can answer, whatever the operation (organizations.tenancy.tenant_admit).
EVERY_ROUTE_ERRORS = {
    "400": "A member of several organizations named none (`organization_required`), or invalid input.",
    "404": "No organization of yours matches the X-Organization header, or no such object (`not_found`).",
    "429": "Rate limited: the organization's, the key's or the client IP's (`rate_limited`).",
    "503": "The rate-limit service is unavailable (`rate_limit_unavailable`); retry shortly.",
}


def _every_route_errors(paths: dict[str, Any]) -> None:
    for path, item in paths.items():
        if not path.startswith("/api/v1/"):
            continue
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            for code, description in EVERY_ROUTE_ERRORS.items():
                responses.setdefault(code, _error_ref(description))


def schema_postprocess(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: the chat SSE routes (plain Django views), client tokens,
    and null spelled the OpenAPI 3.1 way everywhere."""
    result.setdefault("paths", {}).update(_chat_paths())
    _every_route_errors(result["paths"])
    _nulls_as_31(result)
    schemes = result.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["clientToken"] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "lf_ct_…",
        "description": "A client token (`POST /api/v1/client-tokens`): one agent's chat endpoints only.",
    }
    return result
