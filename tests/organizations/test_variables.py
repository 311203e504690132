"""Organization variables and secrets: REST API, write-only secrets, admin, and what the sandbox sees."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from agents.selectors import sandbox_settings_for
from organizations.models import AuditLog, OrganizationVariable
from organizations.services import Actor, variable_set
from tests.organizations.sandbox_bundle import invoke, ready_bundle

SECRET = "sk-live-do-not-leak-7731"
SECRET_BODY = {"value": "x", "is_secret": True, "inject_header": "X-Key", "inject_hosts": ["api.example.com"]}


def put(api, key, name, body):
    return api.request("PUT", f"/api/v1/variables/{name}", json_body=body, key=key)


def put_secret(api, key, name="API_TOKEN", value=SECRET, hosts=("api.example.com",)):
    return put(
        api,
        key,
        name,
        {
            "value": value,
            "is_secret": True,
            "inject_header": "Authorization",
            "inject_prefix": "Bearer ",
            "inject_hosts": list(hosts),
        },
    )


def test_plain_variable_create_replace_list_delete(alice, api):
    key = alice.keys["all"]
    response = put(api, key, "GREETING", {"value": "hello"})
    assert response.status_code == 201, response.content
    assert response.json()["value"] == "hello" and response.json()["is_secret"] is False
    assert put(api, key, "GREETING", {"value": "  hi  "}).status_code == 200
    listed = api.get("/api/v1/variables", key=alice.keys["read"]).json()["results"]
    assert [(v["key"], v["value"]) for v in listed] == [("GREETING", "  hi  ")]
    assert api.get("/api/v1/variables/GREETING", key=alice.keys["read"]).json()["value"] == "  hi  "
    assert api.delete("/api/v1/variables/GREETING", key=key).status_code == 204
    assert api.get("/api/v1/variables/GREETING", key=key).status_code == 404
    actions = list(
        AuditLog.objects.filter(organization=alice.organization, target_type="variable")
        .order_by("pk")
        .values_list("action", flat=True)
    )
    assert actions == ["variable.created", "variable.changed", "variable.deleted"]


def test_secret_is_write_only_and_encrypted_at_rest(alice, api):
    key = alice.keys["all"]
    created = put_secret(api, key)
    assert created.status_code == 201, created.content
    assert created.json()["value"] is None and created["Cache-Control"] == "no-store"
    responses = [
        created,
        api.get("/api/v1/variables", key=key),
        api.get("/api/v1/variables/API_TOKEN", key=key),
        api.get("/api/v1/organization", key=key),
        # Sending it to a new host needs the value again (tests/security/test_egress.py)...
        put_secret(api, key, hosts=["api.example.com", "*.example.org"]),
        # ...re-sending the same hosts without a value keeps the stored one.
        put_secret(api, key, value=None, hosts=["api.example.com", "*.example.org"]),
    ]
    for response in responses:
        assert response.status_code == 200 or response.status_code == 201
        assert SECRET not in response.content.decode()
    detail = api.get("/api/v1/variables/API_TOKEN", key=key).json()
    assert detail["inject_hosts"] == ["api.example.com", "*.example.org"] and detail["value"] is None
    row = OrganizationVariable.objects.get(organization=alice.organization, key="API_TOKEN")
    assert row.value == "" and SECRET not in row.secret_token and row.secret_token
    for entry in AuditLog.objects.filter(organization=alice.organization):
        assert SECRET not in json.dumps(entry.metadata)
    # value=None kept the stored secret: it is still injected.
    egress = sandbox_settings_for(alice.organization).egress
    assert egress.secrets_for("api.example.com") == {"Authorization": f"Bearer {SECRET}"}
    assert egress.secrets_for("x.example.org") == {"Authorization": f"Bearer {SECRET}"}
    assert egress.secrets_for("example.org") == {}


@pytest.mark.parametrize(
    ("name", "body", "field"),
    [
        ("1BAD", {"value": "x"}, "key"),
        ("HAS-DASH", {"value": "x"}, "key"),
        ("NO_VALUE", {}, "value"),
        ("PLAIN", {"value": "x", "inject_hosts": ["api.example.com"]}, "is_secret"),
        ("S", {"value": "x", "is_secret": True, "inject_hosts": ["api.example.com"]}, "inject_header"),
        ("S", {"value": "x", "is_secret": True, "inject_header": "Authorization"}, "inject_hosts"),
        (
            "S",
            {"value": "x", "is_secret": True, "inject_header": "Host", "inject_hosts": ["api.example.com"]},
            "inject_header",
        ),
        ("S", {**SECRET_BODY, "value": "a\r\nX-Evil: 1"}, "value"),
        ("S", {**SECRET_BODY, "inject_hosts": ["*.com"]}, "inject_hosts"),
        (
            "S",
            {"value": "x", "is_secret": True, "inject_header": "X-Key", "inject_hosts": ["169.254.169.254"]},
            "inject_hosts",
        ),
    ],
)
def test_invalid_variables_are_refused(alice, api, name, body, field):
    response = put(api, alice.keys["all"], name, body)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["type"] == "invalid_input"
    assert field in json.dumps(error["detail"]) or field in error["message"]
    assert not OrganizationVariable.objects.exists()


def test_oversized_value_and_unknown_fields(alice, api):
    response = put(api, alice.keys["all"], "BIG", {"value": "x" * (32 * 1024 + 1)})
    assert response.status_code == 400
    response = put(api, alice.keys["all"], "X", {"value": "x", "secret": True})
    assert response.status_code == 400 and "secret" in response.json()["error"]["detail"]


def test_read_scope_cannot_write(alice, api):
    assert put(api, alice.keys["read"], "X", {"value": "x"}).status_code == 403
    assert api.get("/api/v1/variables", key=alice.keys["read"]).status_code == 200
    variable_set(organization=alice.organization, key="X", value="x", actor=Actor.system("tests"))
    assert api.delete("/api/v1/variables/X", key=alice.keys["read"]).status_code == 403


def test_other_organizations_variables_are_404(alice, bob, api):
    variable_set(organization=alice.organization, key="ONLY_ALICE", value="a", actor=Actor.system("tests"))
    put_secret(api, alice.keys["all"])
    bob_key = bob.keys["all"]
    assert api.get("/api/v1/variables/ONLY_ALICE", key=bob_key).status_code == 404
    assert api.delete("/api/v1/variables/ONLY_ALICE", key=bob_key).status_code == 404
    assert api.delete("/api/v1/variables/API_TOKEN", key=bob_key).status_code == 404
    assert api.get("/api/v1/variables", key=bob_key).json()["results"] == []
    # Bob writing the same key creates his own; Alice's value is untouched.
    assert put(api, bob_key, "ONLY_ALICE", {"value": "b"}).status_code == 201
    assert OrganizationVariable.objects.get(organization=alice.organization, key="ONLY_ALICE").value == "a"
    assert sandbox_settings_for(bob.organization).env == {"ONLY_ALICE": "b"}
    assert sandbox_settings_for(bob.organization).egress.secret_headers == {}


def test_admin_never_shows_a_secret_and_blank_keeps_it(admin_user, client, alice, api):
    put_secret(api, alice.keys["all"])
    variable_set(organization=alice.organization, key="PLAIN", value="shown", actor=Actor.system("tests"))
    client.force_login(admin_user)
    url = reverse("admin:organizations_organization_change", args=[alice.organization.pk])
    page = client.get(url).content.decode()
    assert SECRET not in page
    assert "shown" in page and "API_TOKEN" in page
    data = _change_form_data(client, url)
    # Re-submit every row unchanged, and change the plain variable: the secret stays as it was.
    index = {data[f"variables-{i}-key"]: i for i in range(int(data["variables-TOTAL_FORMS"]))}
    data[f"variables-{index['PLAIN']}-new_value"] = "changed"
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    egress = sandbox_settings_for(alice.organization)
    assert egress.env == {"PLAIN": "changed"}
    assert egress.egress.secrets_for("api.example.com") == {"Authorization": f"Bearer {SECRET}"}
    assert SECRET not in client.get(url).content.decode()
    entry = AuditLog.objects.filter(action="variable.changed").latest("pk")
    assert entry.actor_type == "operator" and entry.metadata["key"] == "PLAIN"


def _change_form_data(client, url):
    """The admin change form's current values, as a browser would submit them."""
    import re
    from html import unescape

    page = client.get(url).content.decode()
    data = {}
    for tag in re.findall(r"<(?:input|select|textarea)[^>]*>", page):
        name = re.search(r'name="([^"]+)"', tag)
        if not name or "__prefix__" in name.group(1):
            continue
        kind = re.search(r'type="([^"]+)"', tag)
        if kind and kind.group(1) in ("checkbox",):
            if "checked" in tag:
                data[name.group(1)] = "on"
            continue
        if kind and kind.group(1) in ("submit", "button"):
            continue
        value = re.search(r'value="([^"]*)"', tag)
        data[name.group(1)] = unescape(value.group(1)) if value else ""
    for name, body in re.findall(r'<textarea[^>]*name="([^"]+)"[^>]*>(.*?)</textarea>', page, re.S):
        data[name] = unescape(body.strip("\n"))
    for name, options in re.findall(r'<select[^>]*name="([^"]+)"[^>]*>(.*?)</select>', page, re.S):
        chosen = re.search(r'<option value="([^"]*)"[^>]*selected', options)
        data[name] = chosen.group(1) if chosen else ""
    return data


@pytest.mark.timeout(120)
def test_sandbox_sees_plain_variables_only(alice, bob, api, media_root):
    actor = Actor.system("tests")
    variable_set(organization=alice.organization, key="GREETING", value="hello alice", actor=actor)
    variable_set(organization=alice.organization, key="REGION", value="eu", actor=actor)
    put_secret(api, alice.keys["all"])
    variable_set(organization=bob.organization, key="GREETING", value="hello bob", actor=actor)
    ready_bundle(alice.organization)
    ready_bundle(bob.organization)

    answer = invoke(api, alice.keys["execute"], "printEnv", {})
    assert answer["ok"], answer["error"]
    assert answer["output"]["env"] == {"GREETING": "hello alice", "REGION": "eu"}
    assert answer["output"]["atLoad"] == {"GREETING": "hello alice", "REGION": "eu"}
    assert SECRET not in json.dumps(answer) and "API_TOKEN" not in json.dumps(answer)

    assert invoke(api, bob.keys["execute"], "printEnv", {})["output"]["env"] == {"GREETING": "hello bob"}

    # A change is visible to the next call (the warm state is keyed by the environment).
    variable_set(organization=alice.organization, key="REGION", value="us", actor=actor)
    assert invoke(api, alice.keys["execute"], "printEnv", {})["output"]["env"]["REGION"] == "us"
