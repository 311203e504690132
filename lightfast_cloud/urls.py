"""URL routes: admin, health, REST API v1 with its OpenAPI schema and docs, and the dashboard at the root."""

from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

from lightfast_cloud.health import healthz

# JSON under /api/, HTML pages (templates/404.html, 500.html) elsewhere.
handler404 = "lightfast_cloud.api_errors.api_page_not_found"
handler500 = "lightfast_cloud.api_errors.api_server_error"

api_v1: list[URLPattern | URLResolver] = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # Swagger UI and ReDoc from local static files (drf-spectacular-sidecar); the split view serves
    # Swagger UI's start-up script as a file, not inline.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="swagger-ui"),
    path(
        "redoc/",
        SpectacularRedocView.as_view(url_name="schema", template_name="api/redoc.html"),
        name="redoc",
    ),
    # The run routes first (chats and runs are most of the traffic): the prefixes of the three apps'
    # routes are disjoint, so the order only decides how many patterns a request is tried against.
    path("", include("execution.api_urls")),
    path("", include("agents.api_urls")),
    path("", include("organizations.api_urls")),
]

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("api/v1/", include(api_v1)),
    path("admin/", admin.site.urls),
    path("", include("dashboard.urls")),
]
