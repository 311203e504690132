"""Bad input and failures under /api/ answer the one JSON error format, and write nothing."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from organizations.models import ApiKey, AuditLog


@pytest.fixture
def counts():
    """Row counts that a rejected request must leave unchanged."""

    def snapshot():
        return ApiKey.objects.count(), AuditLog.objects.count()

    return snapshot


def _error(response, status, error_type):
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "message", "detail"}
    assert body["error"]["type"] == error_type
    assert body["error"]["message"]
    assert "Traceback" not in response.content.decode("utf-8", "replace")
    return body["error"]


def test_malformed_json(api, alice, counts):
    before = counts()
    error = _error(
        api.post("/api/v1/api-keys", body='{"scopes": ["read"', key=alice.keys["all"]), 400, "malformed_json"
    )
    assert error["detail"] == {"line": 1, "column": 19}
    _error(api.post("/api/v1/api-keys", body='{"scopes": NaN}', key=alice.keys["all"]), 400, "malformed_json")
    assert counts() == before


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"scopes": "read"}, "scopes"),
        ({"scopes": ["admin"]}, "scopes"),
        ({"scopes": []}, "scopes"),
        ({"scopes": ["read"], "expires_in_days": "soon"}, "expires_in_days"),
        ({"scopes": ["read"], "expires_in_days": 0}, "expires_in_days"),
        ({"scopes": ["read"], "name": {"nested": True}}, "name"),
        ({"scopes": ["read"], "name": "x" * 101}, "name"),
        ({}, "scopes"),
    ],
)
def test_wrong_types_and_values(api, alice, counts, payload, field):
    before = counts()
    error = _error(api.post("/api/v1/api-keys", payload, key=alice.keys["all"]), 400, "invalid_input")
    assert field in error["detail"]
    assert counts() == before


def test_unknown_fields_are_rejected(api, alice, counts):
    before = counts()
    error = _error(
        api.post(
            "/api/v1/api-keys",
            {"scopes": ["read"], "organization": "bob", "secret": "x"},
            key=alice.keys["all"],
        ),
        400,
        "invalid_input",
    )
    assert error["detail"] == {"organization": ["Unknown field."], "secret": ["Unknown field."]}
    assert counts() == before


@pytest.mark.parametrize("payload", [[{"scopes": ["read"]}], "read", 42, None])
def test_body_that_is_not_an_object(api, alice, counts, payload):
    before = counts()
    _error(api.post("/api/v1/api-keys", payload, key=alice.keys["all"]), 400, "invalid_input")
    assert counts() == before


def test_ten_megabyte_body_is_413(api, alice, counts):
    before = counts()
    body = json.dumps({"scopes": ["read"], "name": "x" * (10 * 1024 * 1024)})
    error = _error(api.post("/api/v1/api-keys", body=body, key=alice.keys["all"]), 413, "payload_too_large")
    assert error["detail"]["limit_bytes"] > 0
    assert counts() == before


def test_non_utf8_body(api, alice, counts):
    before = counts()
    error = _error(
        api.post("/api/v1/api-keys", body=b'{"scopes": ["read"], "name": "caf\xe9"}', key=alice.keys["all"]),
        400,
        "invalid_request",
    )
    assert "UTF-8" in error["message"]
    assert counts() == before


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
)
def test_wrong_content_type_is_415(api, alice, counts, content_type):
    before = counts()
    _error(
        api.post("/api/v1/api-keys", body="scopes=read", content_type=content_type, key=alice.keys["all"]),
        415,
        "unsupported_media_type",
    )
    assert counts() == before


def test_unknown_route_is_json_404(api, alice):
    _error(api.get("/api/v1/nothing-here", key=alice.keys["read"]), 404, "not_found")
    _error(api.get("/api/nothing"), 404, "not_found")


def test_unknown_route_outside_api_is_not_json():
    response = Client().get("/no-such-page")
    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


def test_wrong_method_is_json_405(api, alice):
    response = api.request("PUT", "/api/v1/organization", key=alice.keys["all"], json_body={})
    _error(response, 405, "method_not_allowed")
    assert "GET" in response["Allow"]
    _error(
        api.request("PATCH", "/api/v1/api-keys", key=alice.keys["all"], json_body={}),
        405,
        "method_not_allowed",
    )


def test_non_drf_route_under_api_gets_json_errors(api):
    # The schema view is plain DRF but unauthenticated; /api/v1/docs/ is a Django template view.
    assert api.get("/api/v1/schema/").status_code == 200
    _error(api.request("DELETE", "/api/v1/docs/"), 405, "method_not_allowed")


@pytest.mark.urls("tests.organizations.raising_urls")
@pytest.mark.parametrize("path", ["/api/v1/boom-django", "/api/v1/boom-drf"])
def test_unhandled_exception_is_json_500_without_traceback(path, caplog):
    response = Client(raise_request_exception=False).get(path)
    error = _error(response, 500, "server_error")
    assert "secret-internal-detail" not in response.content.decode()
    assert error["detail"] is None
    assert any("secret-internal-detail" in str(record.exc_info) for record in caplog.records)


@pytest.mark.urls("tests.organizations.raising_urls")
def test_an_unreachable_database_is_a_503_to_retry_and_a_value_it_refuses_a_400():
    client = Client(raise_request_exception=False)
    response = client.get("/api/v1/database-refused")
    error = _error(response, 503, "service_unavailable")
    assert response["Retry-After"] == "2"
    assert "5432" not in error["message"]
    _error(client.get("/api/v1/database-refused-value"), 400, "invalid_input")


@pytest.mark.urls("tests.organizations.raising_urls")
def test_unhandled_exception_outside_api_is_not_json():
    response = Client(raise_request_exception=False).get("/boom-page")
    assert response.status_code == 500
    assert not response["Content-Type"].startswith("application/json")


@pytest.mark.urls("tests.organizations.raising_urls")
def test_oversized_body_in_non_drf_view_is_json_413(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = Client().post("/api/v1/echo-django", data="x" * 5000, content_type="text/plain")
    _error(response, 413, "payload_too_large")


def test_errors_stay_json_with_debug_on(api, alice, settings):
    settings.DEBUG = True
    _error(api.get("/api/v1/nothing-here", key=alice.keys["read"]), 404, "not_found")
    _error(
        api.request("PUT", "/api/v1/organization", key=alice.keys["all"], json_body={}),
        405,
        "method_not_allowed",
    )


@pytest.mark.urls("tests.organizations.raising_urls")
def test_unhandled_exception_with_debug_on_is_json_without_traceback(settings):
    settings.DEBUG = True
    response = Client(raise_request_exception=False).get("/api/v1/boom-django")
    _error(response, 500, "server_error")
    assert "secret-internal-detail" not in response.content.decode()
