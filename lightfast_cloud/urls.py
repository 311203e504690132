"""URL routes: admin, health, REST API v1 with its OpenAPI schema and docs."""

from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from lightfast_cloud.health import healthz

# JSON under /api/, Django's pages elsewhere.
handler404 = "lightfast_cloud.api_errors.api_page_not_found"
handler500 = "lightfast_cloud.api_errors.api_server_error"

api_v1: list[URLPattern | URLResolver] = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("", include("organizations.api_urls")),
    path("", include("agents.api_urls")),
    path("", include("execution.api_urls")),
]

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
]
