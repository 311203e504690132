"""DRF authentication: `Authorization: Bearer lf_live_…` API keys, and sessions of dashboard users."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication, SessionAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from organizations.errors import ApiKeyRejected
from organizations.models import ApiKey
from organizations.services import apikey_authenticate


class ApiKeyPrincipal:
    """`request.user` for a request authenticated by an API key: the key acts for its organization."""

    is_authenticated = True
    is_active = True
    is_anonymous = False
    is_staff = False
    is_superuser = False
    pk = None

    def __init__(self, api_key: ApiKey) -> None:
        self.api_key = api_key

    def __str__(self) -> str:
        return self.api_key.display_prefix

    def get_username(self) -> str:
        """The key's display prefix stands in for a username in logs."""
        return self.api_key.display_prefix


class ApiKeyAuthentication(BaseAuthentication):
    """Bearer API keys; a presented but invalid, revoked or expired key is a 401, never a fallback."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[ApiKeyPrincipal, ApiKey] | None:
        """The key's principal and the key, or None when no bearer token is presented."""
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise AuthenticationFailed("Malformed Authorization header; expected `Bearer lf_live_…`.")
        try:
            raw_key = header[1].decode("ascii")
        except UnicodeDecodeError as exc:
            raise AuthenticationFailed("Invalid API key.") from exc
        try:
            api_key = apikey_authenticate(raw_key=raw_key)
        except ApiKeyRejected as exc:
            raise AuthenticationFailed(exc.message) from exc
        return ApiKeyPrincipal(api_key), api_key

    def authenticate_header(self, request: Request | HttpRequest) -> str:
        """Makes DRF answer 401 (not 403) when credentials are missing."""
        return f'{self.keyword} realm="api"'


class MemberSessionAuthentication(SessionAuthentication):
    """Dashboard sessions (CSRF enforced); membership is checked when the view resolves the organization."""

    def enforce_csrf(self, request: Request) -> None:
        """DRF's CSRF check; on a request whose body was already read as a stream (the chat endpoint reads
        its JSON body before authenticating), on Django's request, which then has no form fields to
        parse, so the token comes from the X-CSRFToken header (DRF's would try to re-read the body: a 500)."""
        django_request = request._request
        if django_request._read_started and not hasattr(django_request, "_body"):  # type: ignore[attr-defined]
            super().enforce_csrf(django_request)  # type: ignore[arg-type]  # a Django request is what it checks
            return
        super().enforce_csrf(request)


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """Documents API-key authentication in the OpenAPI schema."""

    target_class = "organizations.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        """HTTP bearer with the key as token."""
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "lf_live_…",
            "description": "An organization API key: `Authorization: Bearer lf_live_…`.",
        }


class MemberSessionAuthenticationScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """Documents session authentication in the OpenAPI schema."""

    target_class = "organizations.authentication.MemberSessionAuthentication"
    name = "session"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        """Django's session cookie plus the CSRF header on writes."""
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": "sessionid",
            "description": "Dashboard session; writes also need the X-CSRFToken header. Members choose "
            "an organization with the X-Organization header when they belong to several.",
        }
