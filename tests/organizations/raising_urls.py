"""Test-only URLconf: the real routes plus views that fail, to check 500 and body-size handling."""

from django.db import DataError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.request import Request

from lightfast_cloud.urls import handler404, handler500  # noqa: F401
from lightfast_cloud.urls import urlpatterns as real_urlpatterns


def boom_django(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("secret-internal-detail")


@api_view(["GET"])
@authentication_classes([])
@permission_classes([])
def boom_drf(request: Request) -> HttpResponse:
    raise RuntimeError("secret-internal-detail")


def database_refused(request: HttpRequest) -> HttpResponse:
    raise OperationalError("connection to server at 127.0.0.1, port 5432 failed: Connection refused")


def database_refused_value(request: HttpRequest) -> HttpResponse:
    raise DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")


def echo_django(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"length": len(request.body)})


urlpatterns = [
    path("api/v1/boom-django", boom_django),
    path("api/v1/boom-drf", boom_drf),
    path("api/v1/echo-django", echo_django),
    path("api/v1/database-refused", database_refused),
    path("api/v1/database-refused-value", database_refused_value),
    path("boom-page", boom_django),
    *real_urlpatterns,
]
