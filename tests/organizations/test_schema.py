"""The OpenAPI schema documents every v1 route and generates without warnings."""

from __future__ import annotations

from io import StringIO

import pytest
import yaml
from django.core.management import call_command
from drf_spectacular.management.commands.spectacular import SchemaGenerationError


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
