"""Egress allow list, secret headers injected by the host, sandbox backend and model provider settings."""

from __future__ import annotations

import json

import pytest

from agents.selectors import sandbox_settings_for
from execution.providers import model_resolve
from execution.providers.demo import DemoProvider
from organizations.errors import SettingInvalid
from organizations.models import AuditLog, ModelProviderConfig
from organizations.services import (
    Actor,
    egress_host_add,
    model_provider_set,
    organization_set_sandbox_backend,
)
from tests.egress_servers import ca_file_for_tests
from tests.organizations.sandbox_bundle import (  # noqa: F401 - fixtures
    EchoHandler,
    echo_server,
    invoke,
    ready_bundle,
)

SECRET = "ghp-egress-secret-0451"


def add(api, key, pattern):
    return api.post("/api/v1/egress/hosts", json={"pattern": pattern}, key=key)


def test_allow_list_add_normalise_list_remove(alice, api):
    key = alice.keys["all"]
    response = add(api, key, "API.Example.com.")
    assert response.status_code == 201, response.content
    assert response.json()["pattern"] == "api.example.com"
    assert add(api, key, "api.example.com").status_code == 200  # already allowed
    assert add(api, key, "*.bücher.de").json()["pattern"] == "*.xn--bcher-kva.de"
    assert add(api, key, "8.8.8.8").status_code == 201
    listed = [h["pattern"] for h in api.get("/api/v1/egress/hosts", key=alice.keys["read"]).json()["results"]]
    assert listed == ["*.xn--bcher-kva.de", "8.8.8.8", "api.example.com"]
    assert sandbox_settings_for(alice.organization).egress.allow_hosts == listed
    assert api.delete("/api/v1/egress/hosts/API.EXAMPLE.COM", key=key).status_code == 204
    assert api.delete("/api/v1/egress/hosts/api.example.com", key=key).status_code == 404
    assert api.delete("/api/v1/egress/hosts/*", key=key).status_code == 404
    assert "api.example.com" not in sandbox_settings_for(alice.organization).egress.allow_hosts
    actions = set(AuditLog.objects.filter(organization=alice.organization).values_list("action", flat=True))
    assert {"egress_host.added", "egress_host.removed"} <= actions


@pytest.mark.parametrize(
    "pattern",
    [
        "",
        "*",
        "*.com",
        "*.*.example.com",
        "api.*.example.com",
        "10.0.0.1",
        "127.0.0.1",
        "[::1]",
        "::ffff:192.168.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "224.0.0.1",
        "fd00::1",
        "*.10.0.0",
        "localhost",
        "metadata.localhost",
        "http://api.example.com",
        "api.example.com/path",
        "api.example.com:8443",
        "user@api.example.com",
        "bad_label.example.com",
        "-bad.example.com",
        "a" * 254,
    ],
)
def test_unsafe_or_malformed_patterns_are_refused(alice, api, pattern):
    response = add(api, alice.keys["all"], pattern)
    assert response.status_code == 400, (pattern, response.content)
    assert response.json()["error"]["type"] in ("invalid_input", "invalid_request")
    assert sandbox_settings_for(alice.organization).egress.allow_hosts == []


def test_allow_list_is_per_organization(alice, bob, api):
    egress_host_add(organization=alice.organization, pattern="api.example.com", actor=Actor.system("tests"))
    assert api.get("/api/v1/egress/hosts", key=bob.keys["all"]).json()["results"] == []
    assert api.delete("/api/v1/egress/hosts/api.example.com", key=bob.keys["all"]).status_code == 404
    assert sandbox_settings_for(bob.organization).egress.allow_hosts == []
    assert sandbox_settings_for(alice.organization).egress.allow_hosts == ["api.example.com"]
    assert add(api, alice.keys["read"], "x.example.com").status_code == 403


def test_default_is_deny_all_and_platform_backend(alice, settings):
    policy = sandbox_settings_for(alice.organization)
    assert policy.env == {} and policy.egress.allow_hosts == [] and policy.egress.secret_headers == {}
    assert policy.egress.unsafe_allow_loopback_for_tests is False
    assert policy.backend == settings.LIGHTFAST_SANDBOX_BACKEND
    organization_set_sandbox_backend(
        organization=alice.organization, backend="docker", actor=Actor.system("t")
    )
    assert sandbox_settings_for(alice.organization).backend == "docker"
    with pytest.raises(SettingInvalid):
        organization_set_sandbox_backend(
            organization=alice.organization, backend="vm2", actor=Actor.system("t")
        )


@pytest.mark.timeout(120)
def test_fetch_gets_secret_header_injected_and_js_never_sees_it(
    alice,
    bob,
    api,
    settings,
    echo_server,  # noqa: F811 - fixture
    media_root,
):
    # The sandbox tests' switch for reaching a loopback test server; production never sets it.
    settings.LIGHTFAST_TEST_EGRESS_LOOPBACK = True
    settings.LIGHTFAST_TEST_EGRESS_CA_FILE = ca_file_for_tests()
    key = alice.keys["all"]
    assert add(api, key, "localhost").status_code == 201
    response = api.request(
        "PUT",
        "/api/v1/variables/TOKEN",
        json_body={
            "value": SECRET,
            "is_secret": True,
            "inject_header": "Authorization",
            "inject_prefix": "Bearer ",
            # Secrets go over https only, to 443 unless the pattern names the port.
            "inject_hosts": [f"localhost:{echo_server}"],
        },
        key=key,
    )
    assert response.status_code == 201, response.content
    ready_bundle(alice.organization)
    ready_bundle(bob.organization)
    url = f"https://localhost:{echo_server}/data"

    answer = invoke(api, alice.keys["execute"], "fetchUrl", {"url": url})
    assert answer["ok"], answer["error"]
    assert answer["output"]["status"] == 200
    assert EchoHandler.received[-1]["authorization"] == f"Bearer {SECRET}"
    assert EchoHandler.received[-1]["x-from-js"] == "yes"
    assert "authorization" in json.loads(answer["output"]["body"])["header_names"]
    # The server echoed the secret in a response header: the host scrubbed it before JS saw the answer.
    assert answer["output"]["headers"]["x-plain"] == "visible"
    assert "x-echo-authorization" not in answer["output"]["headers"]
    assert SECRET not in json.dumps(answer)
    env = invoke(api, alice.keys["execute"], "printEnv", {})
    assert env["output"]["env"] == {} and SECRET not in json.dumps(env)

    # Bob has no allow list and no secret: the same request is denied inside JS, nothing is sent.
    before = len(EchoHandler.received)
    denied = invoke(api, bob.keys["execute"], "fetchUrl", {"url": url})
    assert denied["ok"] and "allow list" in denied["output"]["rejected"]
    assert len(EchoHandler.received) == before

    # Without the test switch (production), loopback stays unreachable even though it is listed.
    settings.LIGHTFAST_TEST_EGRESS_LOOPBACK = False
    denied = invoke(api, alice.keys["execute"], "fetchUrl", {"url": url})
    assert "loopback" in denied["output"]["rejected"]
    assert len(EchoHandler.received) == before


def test_secret_goes_only_to_its_hosts(alice, settings):
    actor = Actor.system("tests")
    from organizations.services import variable_set

    variable_set(
        organization=alice.organization,
        key="K",
        value=SECRET,
        is_secret=True,
        inject_header="X-Api-Key",
        inject_hosts=["api.example.com"],
        actor=actor,
    )
    egress_host_add(organization=alice.organization, pattern="*.example.com", actor=actor)
    policy = sandbox_settings_for(alice.organization).egress
    assert policy.host_allowed("other.example.com")
    assert policy.secrets_for("other.example.com") == {}
    assert policy.secrets_for("api.example.com") == {"X-Api-Key": SECRET}


def test_model_provider_key_is_write_only_and_bound_to_its_url(alice, bob, api):
    key = alice.keys["all"]
    body = {
        "base_url": "https://llm.example.com/v1/",
        "api_key": "sk-provider-123",
        "model_map": {"openai/gpt-4o-mini": "small", "*": "large"},
    }
    response = api.request("PUT", "/api/v1/model-provider", json_body=body, key=key)
    assert response.status_code == 200, response.content
    assert (
        response.json()["has_api_key"] is True and response.json()["base_url"] == "https://llm.example.com/v1"
    )
    assert "sk-provider-123" not in response.content.decode()
    got = api.get("/api/v1/model-provider", key=alice.keys["read"])
    assert "sk-provider-123" not in got.content.decode() and got.json()["has_api_key"] is True
    assert "sk-provider-123" not in ModelProviderConfig.objects.get().api_key_token

    resolved = model_resolve(
        {"provider": "gateway", "id": "openai/gpt-4o-mini"}, organization=alice.organization
    )
    assert resolved.model == "small"
    assert resolved.provider.base_url == "https://llm.example.com/v1"
    assert resolved.provider._client.api_key == "sk-provider-123"
    assert model_resolve("anthropic/claude", organization=alice.organization).model == "large"
    # Bob is untouched: the platform's provider (the demo model in tests).
    assert isinstance(
        model_resolve("openai/gpt-4o-mini", organization=bob.organization).provider, DemoProvider
    )
    assert api.get("/api/v1/model-provider", key=bob.keys["all"]).json()["has_api_key"] is False

    # Moving the URL without a new key drops the key: it never travels to a server it was not set for.
    moved = api.request(
        "PUT", "/api/v1/model-provider", json_body={"base_url": "https://other.example.net"}, key=key
    )
    assert moved.json()["has_api_key"] is False
    assert api.delete("/api/v1/model-provider", key=key).status_code == 204
    assert isinstance(
        model_resolve("openai/gpt-4o-mini", organization=alice.organization).provider, DemoProvider
    )
    assert (
        api.request("PUT", "/api/v1/model-provider", json_body=body, key=alice.keys["read"]).status_code
        == 403
    )


@pytest.mark.parametrize(
    "base_url",
    [
        "http://llm.example.com/v1",
        "https://10.0.0.5/v1",
        "https://169.254.169.254/latest",
        "https://localhost:11434/v1",
        "ftp://llm.example.com",
        "https://user:pw@llm.example.com",
        "llm.example.com",
    ],
)
def test_model_provider_url_must_be_public_https(alice, api, base_url):
    response = api.request(
        "PUT", "/api/v1/model-provider", json_body={"base_url": base_url}, key=alice.keys["all"]
    )
    assert response.status_code == 400, (base_url, response.content)
    assert not ModelProviderConfig.objects.exists()


def test_model_map_only_overlays_the_platform_map(alice, settings):
    settings.LIGHTFAST_MODEL_BASE_URL = "https://platform.example.com/v1"
    settings.LIGHTFAST_MODEL_API_KEY = "sk-platform"
    settings.LIGHTFAST_MODEL_MAP = {"openai/gpt-4o-mini": "platform-small", "x/y": "platform-y"}
    model_provider_set(
        organization=alice.organization, base_url="", model_map={"x/y": "org-y"}, actor=Actor.system("t")
    )
    assert model_resolve("x/y", organization=alice.organization).model == "org-y"
    assert model_resolve("openai/gpt-4o-mini", organization=alice.organization).model == "platform-small"
    assert model_resolve("x/y").model == "platform-y"
