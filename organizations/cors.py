"""CORS for browser clients: each organization lists the origins whose pages may call the API and chat."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.utils.cache import patch_vary_headers

from lightfast_cloud.api_errors import error_response, is_api_request
from lightfast_cloud.errors import LightfastError
from organizations.errors import SettingInvalid
from organizations.selectors import organizations_allowing_origin
from organizations.services import allowed_origin_clean

ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
# What a page may read besides the CORS-safelisted response headers.
EXPOSE_HEADERS = (
    "x-vercel-ai-ui-message-stream, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, "
    "RateLimit, RateLimit-Policy, Retry-After, WWW-Authenticate, Location"
)
PREFLIGHT_MAX_AGE_S = 600
# Set on the Django request by `cors_check_tenant` once the caller is known.
ORGANIZATION_ATTRIBUTE = "lightfast_cors_organization_id"


class OriginNotAllowed(LightfastError):
    code = "origin_not_allowed"
    default_message = "This page's origin is not one of the organization's allowed origins."


def cors_origin_canonical(origin: str) -> str | None:
    """The origin in its canonical form, or None when it is not one an organization could allow."""
    try:
        return allowed_origin_clean(origin=origin)
    except SettingInvalid:
        return None


def _same_site(request: HttpRequest, origin: str) -> bool:
    """The page is the platform's own (the admin), or a trusted origin: no CORS involved."""
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    return urlsplit(origin).netloc.lower() == request.get_host().lower()


def cors_check_tenant(request: HttpRequest, organization_id: int) -> None:
    """Refuse a cross-origin request from an origin the caller's organization does not allow.

    Called once the caller is known (`tenant_admit`), before the view does anything: a browser
    page on another site must not start runs it cannot read the answer of. Requests without
    `Origin` (servers, the CLI) are not concerned.
    """
    setattr(request, ORGANIZATION_ATTRIBUTE, organization_id)
    origin = request.headers.get("Origin")
    if not origin or _same_site(request, origin):
        return
    canonical = cors_origin_canonical(origin)
    if canonical is None or organization_id not in organizations_allowing_origin(canonical):
        raise OriginNotAllowed(detail={"origin": origin[:300]})


class CorsMiddleware:
    """Answers preflights and adds `Access-Control-Allow-Origin` under /api/ for allowed origins.

    A preflight carries no credentials, so it is answered for an origin that any active
    organization allows; the actual request is then held to its caller's organization
    (`cors_check_tenant`), and its response names the origin only when that organization allows it
    (or, when no caller was resolved, e.g. a 401, when some organization does, so the page can read
    the error). The origin is echoed, never `*`, and `Access-Control-Allow-Credentials` is never
    sent: browsers authenticate with a bearer client token, not cookies.

    Written here rather than with django-cors-headers: its decision is per request before the view
    runs (a signal without the caller), while this one depends on the caller's organization.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        origin = request.headers.get("Origin")
        if not origin or not is_api_request(request) or _same_site(request, origin):
            return self.get_response(request)
        canonical = cors_origin_canonical(origin)
        allowing = organizations_allowing_origin(canonical) if canonical is not None else frozenset()
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return self._preflight(request, origin, bool(allowing))
        response = self.get_response(request)
        patch_vary_headers(response, ["Origin"])
        organization_id = getattr(request, ORGANIZATION_ATTRIBUTE, None)
        if allowing and (organization_id is None or organization_id in allowing):
            response["Access-Control-Allow-Origin"] = origin
            response["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        return response

    @staticmethod
    def _preflight(request: HttpRequest, origin: str, allowed: bool) -> HttpResponseBase:
        response: HttpResponseBase
        if not allowed:
            response = error_response(403, OriginNotAllowed.code, OriginNotAllowed.default_message)
        else:
            response = HttpResponse(status=204)
            response["Access-Control-Allow-Origin"] = origin
            response["Access-Control-Allow-Methods"] = ALLOW_METHODS
            requested = request.headers.get("Access-Control-Request-Headers", "")
            # Echoed (token characters only): `*` would not cover Authorization.
            names = [name.strip() for name in requested.split(",") if name.strip()]
            if names and all(name.replace("-", "").isalnum() for name in names):
                response["Access-Control-Allow-Headers"] = ", ".join(names)
            response["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE_S)
        patch_vary_headers(
            response, ["Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers"]
        )
        return response
