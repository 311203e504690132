"""The OpenAPI schema documents every v1 route and generates without warnings."""

from __future__ import annotations

import os
import subprocess
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command
from drf_spectacular.management.commands.spectacular import SchemaGenerationError

from tests import openapi_validation


def test_schema_generates_valid_without_warnings(tmp_path):
    target, warnings = tmp_path / "schema.yaml", StringIO()
    try:
        call_command(
            "spectacular",
            "--validate",
            "--fail-on-warn",
            "--file",
            str(target),
            stdout=StringIO(),
            stderr=warnings,
        )
    except SchemaGenerationError:
        pytest.fail(f"schema generation warned:\n{warnings.getvalue()}")
    schema = yaml.safe_load(target.read_text())
    operations = {(path, method): op for path, item in schema["paths"].items() for method, op in item.items()}
    assert set(operations) >= {
        ("/api/v1/organization", "get"),
        ("/api/v1/api-keys", "get"),
        ("/api/v1/api-keys", "post"),
        ("/api/v1/api-keys/{key_id}", "get"),
        ("/api/v1/api-keys/{key_id}", "delete"),
        ("/api/v1/members", "get"),
    }
    for (path, method), operation in operations.items():
        if not path.startswith("/api/v1/") or path.startswith("/api/v1/schema"):
            continue
        assert {"200", "201", "202", "204"} & set(operation["responses"]), (path, method)
        assert "401" in operation["responses"], (path, method)
        assert {"apiKey": []} in operation["security"], (path, method)
    assert "requestBody" in operations[("/api/v1/api-keys", "post")]
    assert schema["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"


@pytest.mark.django_db
def test_schema_and_docs_are_served(client):
    response = client.get("/api/v1/schema/")
    assert response.status_code == 200
    assert b"/api/v1/api-keys" in response.content
    assert client.get("/api/v1/docs/").status_code == 200


def _generated_schema(tmp_path) -> tuple[dict, Path]:
    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--file", str(target), stdout=StringIO(), stderr=StringIO())
    return yaml.safe_load(target.read_text()), target


def test_schema_is_openapi_31_with_servers_summaries_and_the_chat_streams(tmp_path):
    schema, _ = _generated_schema(tmp_path)
    assert schema["openapi"].startswith("3.1")
    assert schema["servers"] and schema["servers"][0]["url"] == "/"
    operations = [(path, method, op) for path, item in schema["paths"].items() for method, op in item.items()]
    assert all(op.get("summary") for _, _, op in operations), [
        (p, m) for p, m, op in operations if not op.get("summary")
    ]
    text = yaml.safe_dump(schema)
    assert "nullable" not in text  # 3.1 spells null as a type
    chat = schema["paths"]["/api/v1/chat/{bundle}/{agent}"]
    assert "text/event-stream" in chat["post"]["responses"]["200"]["content"]
    reconnect = schema["paths"]["/api/v1/chat/{bundle}/{agent}/{chat_id}/stream"]["get"]
    assert {"200", "204"} <= set(reconnect["responses"])
    assert {"clientToken": []} in chat["post"]["security"]
    # Lists are objects with `results`, as the API answers.
    for path in ("/api/v1/agents", "/api/v1/bundles", "/api/v1/bundles/{slug}/versions"):
        ref = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"][
            "$ref"
        ]
        component = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]
        assert component["properties"]["results"]["type"] == "array", path
    provider = schema["components"]["schemas"]["ModelProvider"]["properties"]["updated_at"]
    assert "null" in provider["type"]


REDOCLY = Path(__file__).resolve().parents[2] / "node_modules" / ".bin" / "redocly"


@pytest.mark.skipif(not REDOCLY.exists(), reason="@redocly/cli is a devDependency: run `npm ci` first")
def test_redocly_lint_finds_no_errors(tmp_path):
    _, target = _generated_schema(tmp_path)
    config = Path(__file__).resolve().parents[2] / "redocly.yaml"
    result = subprocess.run(
        [str(REDOCLY), "lint", str(target), "--config", str(config), "--format", "summary"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "REDOCLY_TELEMETRY": "off", "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Your API description is valid" in output, output


@pytest.mark.skipif(not openapi_validation.AVAILABLE, reason="openapi-core is not installed (dev extras)")
@pytest.mark.django_db
def test_every_api_response_is_validated_against_the_schema(alice, api):
    """The suite-wide check is on: a response that breaks the schema fails the test that got it."""
    response = api.get("/api/v1/bundles", key=alice.keys["all"])  # validated by the conftest hook
    assert response.status_code == 200 and response.json() == {"results": []}
    response.content = b'[{"slug": 1}]'  # what the schema used to claim, and wrong types
    with pytest.raises(AssertionError, match="disagrees with the OpenAPI schema"):
        openapi_validation.openapi_response_validate(response)
