"""Text no database can store (NUL, unpaired surrogates): in a path or query string it names nothing and is
refused with a JSON 400; in a JSON body it becomes U+FFFD (the platform's value rule). Same on SQLite and
PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from lightfast_cloud.api_input import unstorable
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


def test_a_nul_in_a_json_body_is_stored_as_the_replacement_character(api: Any, alice: Any) -> None:
    """The platform's one rule for text a database cannot hold (docs/security.md): U+FFFD."""
    response = api.request(
        "PUT",
        "/api/v1/variables/GREETING",
        json_body={"value": "hi\u0000there \ud83d!"},
        key=alice.keys["all"],
    )
    assert response.status_code in (200, 201), response.content
    stored = api.get("/api/v1/variables/GREETING", key=alice.keys["all"]).json()
    assert stored["value"] == "hi\ufffdthere \ufffd!"


def test_a_nul_in_a_chat_message_reaches_the_session_as_the_replacement_character(
    api: Any, alice: Any
) -> None:
    manifest_version(alice.organization)
    body = {"input": "hello\u0000world", "agent": "weather/weather"}
    response = api.post("/api/v1/runs", json=body, key=alice.keys["all"])
    assert response.status_code == 202, response.content
    session = response.json()["session"]
    messages = api.get(f"/api/v1/sessions/{session}/messages", key=alice.keys["all"]).json()["results"]
    assert messages[0]["parts"] == [{"type": "text", "text": "hello\ufffdworld"}]


def test_unstorable_finds_nul_and_unpaired_surrogates() -> None:
    assert not unstorable("fine \U0001f600 paired")
    assert unstorable("x\x00")
    assert unstorable("\ud83d")
