"""Site-wide odds and ends."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect
from django.templatetags.static import static


def favicon(request: HttpRequest) -> HttpResponse:
    """`/favicon.ico`: the dashboard's icon, under its hashed static name."""
    return HttpResponsePermanentRedirect(static("dashboard/favicon.svg"))
