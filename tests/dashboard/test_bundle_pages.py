"""The bundles pages through Django's test client: the list, uploading (refusals next to their field, the
version's live status), a bundle's versions and agents, activation and rollback, the tool playground;
another organization's bundles are 404."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils.html import strip_tags

from agents.models import Bundle, BundleVersion, VersionStatus
from agents.services import bundle_version_quarantine
from organizations.models import Role
from organizations.services import Actor
from tests.bundles import WEATHER, manifest_version, sample, uploaded_version

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


@pytest.fixture(autouse=True)
def _media(media_root: Path) -> Path:
    return media_root


def words(html: str) -> str:
    """The text of an HTML fragment with its whitespace collapsed."""
    return " ".join(strip_tags(html).split())


def bundle_file(data: bytes, name: str = "weather.mjs") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="text/javascript")


def test_the_list_shows_active_version_status_and_agents(alice: Any, bob: Any, member_client: Any) -> None:
    manifest_version(alice.organization)
    newer = manifest_version(alice.organization, status=VersionStatus.VALIDATING)
    Bundle.objects.filter(organization=alice.organization).update(active_version=newer.pk - 1)
    page = member_client(alice.owner).get("/bundles/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'href="/bundles/weather/"' in html
    assert "v1" in html and "Validating" in html and "v2" in html  # the newest version's status, named
    assert 'href="/chat/weather/weather/"' in html
    assert 'action="/bundles/"' in html and "Bundle file" in html and "Slug" in html
    assert "weather" not in member_client(bob.owner).get("/bundles/").content.decode().split("<h1>")[1]


PAGES = ["/bundles/", "/bundles/weather/", "/bundles/weather/tools/getWeather/", "/runs/", "/usage/"]


@pytest.mark.parametrize("path", [*PAGES, "/chat/", "/chat/weather/weather/", "/chat/weather/weather/a/b/"])
def test_anonymous_visitors_go_to_the_login_page(path: str) -> None:
    response = Client().get(path)
    assert response.status_code == 302 and response["Location"] == f"/accounts/login/?next={path}"


def test_only_admins_and_owners_see_the_upload_form(alice: Any, member_client: Any) -> None:
    html = member_client(alice.users[Role.MEMBER]).get("/bundles/").content.decode()
    assert "Bundle file" not in html
    response = member_client(alice.users[Role.MEMBER]).post(
        "/bundles/", {"slug": "weather", "file": bundle_file(sample("weather.mjs"))}
    )
    assert response.status_code == 403
    assert not Bundle.objects.filter(organization=alice.organization).exists()


def test_upload_without_javascript_goes_to_the_bundle_page(alice: Any, member_client: Any) -> None:
    client = member_client(alice.owner)
    response = client.post("/bundles/", {"slug": "weather", "file": bundle_file(sample("weather.mjs"))})
    assert response.status_code == 302 and response["Location"] == "/bundles/weather/"
    version = BundleVersion.objects.get(organization=alice.organization, bundle__slug="weather")
    assert version.status == VersionStatus.VALIDATING
    page = client.get("/bundles/weather/").content.decode()
    assert "Uploaded version 1 of weather" in page
    assert 'hx-get="/bundles/weather/versions/1/status/"' in page


def test_upload_with_htmx_answers_the_form_and_the_live_status(alice: Any, member_client: Any) -> None:
    response = member_client(alice.owner).post(
        "/bundles/", {"slug": "weather", "file": bundle_file(sample("weather.mjs"))}, headers=HTMX
    )
    html = response.content.decode()
    assert response.status_code == 200 and html.lstrip().startswith('<div id="upload"')
    assert 'hx-get="/bundles/weather/versions/1/status/"' in html and "Validating" in html
    assert 'id="upload-progress" class="upload-progress" hx-preserve="true"' in html


def test_a_syntax_error_is_shown_with_its_line_and_column_next_to_the_file(
    alice: Any, member_client: Any
) -> None:
    response = member_client(alice.owner).post(
        "/bundles/",
        {"slug": "broken", "file": bundle_file(sample("hostile/syntax-error.mjs"), "syntax-error.mjs")},
        headers=HTMX,
    )
    html = response.content.decode()
    errors = html.split('id="id_file_error"')[1].split("</ul>")[0]
    assert "line 3, column 66" in errors
    assert 'aria-describedby="id_file_error' in html or "id_file_error" in html
    assert not Bundle.objects.filter(organization=alice.organization).exists()


@pytest.mark.parametrize(
    ("slug", "message"),
    [("", "This field is required."), ("Not A Slug", "Use lowercase letters, digits and inner hyphens")],
)
def test_a_bad_slug_is_refused_next_to_the_slug(
    alice: Any, member_client: Any, slug: str, message: str
) -> None:
    response = member_client(alice.owner).post(
        "/bundles/", {"slug": slug, "file": bundle_file(sample("weather.mjs"))}
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert message in html.split('id="id_slug_error"')[1].split("</ul>")[0]


def test_a_bundle_over_the_plan_limit_is_refused_while_it_streams_in(alice: Any, member_client: Any) -> None:
    alice.organization.max_bundle_bytes = 100
    alice.organization.save(update_fields=["max_bundle_bytes"])
    response = member_client(alice.owner).post(
        "/bundles/", {"slug": "weather", "file": bundle_file(sample("weather.mjs"))}, headers=HTMX
    )
    errors = response.content.decode().split('id="id_file_error"')[1].split("</ul>")[0]
    assert "larger than this organization" in errors and "100 bytes" in errors
    assert not Bundle.objects.filter(organization=alice.organization).exists()


def test_upload_needs_the_csrf_token(alice: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice.owner)
    response = client.post("/bundles/", {"slug": "weather", "file": bundle_file(sample("weather.mjs"))})
    assert response.status_code == 403
    assert not Bundle.objects.filter(organization=alice.organization).exists()


def test_the_version_status_polls_until_it_ends(alice: Any, bob: Any, member_client: Any) -> None:
    version = manifest_version(alice.organization, status=VersionStatus.VALIDATING)
    client = member_client(alice.owner)
    url = "/bundles/weather/versions/1/status/"
    validating = client.get(url, headers=HTMX)
    assert f'hx-get="{url}"' in validating.content.decode() and "HX-Trigger" not in validating
    BundleVersion.objects.filter(pk=version.pk).update(
        status=VersionStatus.REJECTED,
        error_type="invalid_bundle",
        error_message="The default export is not a Lightfast config.",
        error_line=7,
        error_column=12,
    )
    rejected = client.get(url, headers=HTMX)
    html = rejected.content.decode()
    assert "hx-get" not in html and rejected["HX-Trigger"] == "bundles-changed"
    assert "Line 7, column 12" in html and "not a Lightfast config" in html
    assert member_client(bob.owner).get(url).status_code == 404


def test_the_bundle_page_shows_versions_agents_and_tools_as_readable_fields(
    alice: Any, bob: Any, member_client: Any
) -> None:
    manifest_version(alice.organization)
    html = member_client(alice.owner).get("/bundles/weather/").content.decode()
    assert "gateway: openai/gpt-4o-mini" in html
    assert "You are a concise weather assistant." in html
    assert "<code>getWeather</code>" in html and "Get the current weather for a city" in html
    city = words(html.split("<code>city</code>")[1].split("</dd>")[0])
    assert city == "required text, at least 1 character City name, e.g. Paris"
    unit = words(html.split("<code>unit</code>")[1].split("</dd>")[0])
    assert unit == "optional one of celsius, fahrenheit"
    assert 'href="/bundles/weather/tools/getWeather/"' in html
    assert member_client(bob.owner).get("/bundles/weather/").status_code == 404


def test_a_quarantined_version_shows_a_banner(alice: Any, member_client: Any) -> None:
    version = manifest_version(alice.organization)
    bundle_version_quarantine(version=version, actor=Actor.system("tests"), reason="mining cryptocurrency")
    html = member_client(alice.owner).get("/bundles/weather/").content.decode()
    banner = html.split('class="banner banner-danger" role="alert"')[1].split("</div>")[0]
    assert "Version 1 is quarantined" in banner and "mining cryptocurrency" in banner
    assert "no active version" in banner


def test_activate_and_roll_back(alice: Any, bob: Any, member_client: Any) -> None:
    first = manifest_version(alice.organization)
    second = manifest_version(alice.organization)
    client = member_client(alice.owner)
    html = client.get("/bundles/weather/").content.decode()
    assert 'action="/bundles/weather/rollback/"' in html
    assert 'aria-label="Activate version 1"' in html and 'aria-label="Activate version 2"' not in html

    response = client.post("/bundles/weather/rollback/")
    assert response.status_code == 302
    assert Bundle.objects.get(pk=first.bundle_id).active_version_id == first.pk
    assert "Rolled back: version 1 is now active." in client.get("/bundles/weather/").content.decode()

    client.post("/bundles/weather/versions/2/activate/")
    assert Bundle.objects.get(pk=first.bundle_id).active_version_id == second.pk
    # Another organization, and a member without the write scope, change nothing.
    assert member_client(bob.owner).post("/bundles/weather/versions/1/activate/").status_code == 404
    assert member_client(alice.users[Role.MEMBER]).post("/bundles/weather/rollback/").status_code == 403
    assert Bundle.objects.get(pk=first.bundle_id).active_version_id == second.pk


def test_activating_a_version_that_is_not_ready_says_why(alice: Any, member_client: Any) -> None:
    manifest_version(alice.organization)
    manifest_version(alice.organization, status=VersionStatus.REJECTED)
    client = member_client(alice.owner)
    client.post("/bundles/weather/versions/2/activate/")
    assert "only a ready version can be made active" in client.get("/bundles/weather/").content.decode()


def test_the_playground_form_follows_the_schema_and_validates_on_the_server(
    alice: Any, member_client: Any
) -> None:
    manifest_version(alice.organization)
    client = member_client(alice.owner)
    html = client.get("/bundles/weather/tools/getWeather/").content.decode()
    assert '<label for="id_input-city">city' in html and 'name="input-city"' in html
    assert '<select name="input-unit"' in html and 'value="&quot;celsius&quot;">celsius' in html
    refused = client.post("/bundles/weather/tools/getWeather/", {"input-city": ""}).content.decode()
    assert "This field is required." in refused.split('id="id_input-city_error"')[1]
    assert "Result" not in refused


def test_the_playground_runs_the_tool_and_shows_output_logs_and_usage(
    alice: Any, bob: Any, member_client: Any
) -> None:
    uploaded_version(alice.organization, WEATHER)
    response = member_client(alice.users[Role.MEMBER]).post(
        "/bundles/weather/tools/getWeather/", {"input-city": "Paris", "input-unit": '"celsius"'}
    )
    html = response.content.decode()
    output = html.split('class="tool-output"')[1].split("</pre>")[0]
    assert (
        "&quot;city&quot;: &quot;Paris&quot;" in output and "&quot;unit&quot;: &quot;celsius&quot;" in output
    )
    assert "weather lookup for Paris" in html
    assert "<dt>CPU</dt>" in html
    assert (
        member_client(alice.users[Role.VIEWER])
        .post("/bundles/weather/tools/getWeather/", {"input-city": "Paris"})
        .status_code
        == 403
    )
    assert member_client(bob.owner).get("/bundles/weather/tools/getWeather/").status_code == 404
    assert member_client(alice.owner).get("/bundles/weather/tools/nothing/").status_code == 404
