"""Test-only URLconf: the real routes plus views that fail, to check 500 and body-size handling."""

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


def echo_django(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"length": len(request.body)})


urlpatterns = [
    path("api/v1/boom-django", boom_django),
    path("api/v1/boom-drf", boom_drf),
    path("api/v1/echo-django", echo_django),
    path("boom-page", boom_django),
    *real_urlpatterns,
]
