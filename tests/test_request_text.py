"""Text no database can store (NUL, unpaired surrogates) is refused at the door with a JSON 400, on SQLite and
PostgreSQL alike, wherever it comes in: path, query string, JSON body, chat body."""

from __future__ import annotations

from typing import Any

import pytest

from lightfast_cloud.api_input import unstorable_text
from tests.bundles import manifest_version

pytestmark = pytest.mark.django_db

NUL_URLS = [
    ("/api/v1/runs?agent=%00", "query parameter 'agent'"),
    ("/api/v1/bundles/%00", "path"),
    ("/api/v1/variables/%00", "path"),
    ("/api/v1/sessions/%00/messages", "path"),
    ("/api/v1/api-keys/%00", "path"),
    ("/api/v1/audit?action=%00", "query parameter 'action'"),
    ("/api/v1/runs/%00/events", "path"),
    ("/api/v1/egress/hosts/a%00b", "path"),
    ("/api/v1/sessions?agent=x&%00=1", "query parameter '\\x00'"),
]


@pytest.mark.parametrize(("url", "where"), NUL_URLS)
def test_a_nul_in_the_path_or_query_is_a_json_400(api: Any, alice: Any, url: str, where: str) -> None:
    response = api.get(url, key=alice.keys["all"])
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    assert "NUL" in error["message"]
    assert error["detail"] == {"parameter": where}


def test_a_nul_outside_the_api_is_a_plain_400(client: Any) -> None:
    response = client.get("/admin/%00/")
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")


def test_a_nul_in_a_json_body_is_refused_naming_where(api: Any, alice: Any) -> None:
    response = api.request(
        "PUT", "/api/v1/variables/GREETING", json_body={"value": "hi\u0000there"}, key=alice.keys["all"]
    )
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["type"], error["detail"]) == ("invalid_input", {"path": "$.value"})


def test_a_nul_in_a_chat_body_is_refused(api: Any, alice: Any) -> None:
    manifest_version(alice.organization)
    body = {
        "id": "chat",
        "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "\u0000"}]}],
    }
    response = api.post(
        "/api/v1/chat/weather/weather",
        json=body,
        key=alice.keys["all"],
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 400, response.content
    assert response.json()["error"]["detail"] == {"path": "$.messages[0].parts[0].text"}


def test_unstorable_text_finds_keys_values_and_surrogates_at_any_depth() -> None:
    assert unstorable_text({"a": [1, {"b": "fine"}], "c": None}) is None
    assert unstorable_text({"a": [1, {"b": "x\x00"}]}) == "$.a[1].b"
    assert unstorable_text({"a": {"k\x00": 1}}) == "$.a"
    assert unstorable_text(["ok", "\ud83d"]) == "$[1]"
    assert unstorable_text("\U0001f600 paired is fine") is None
