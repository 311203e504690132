"""REST API v1 routes of the organizations app (included at /api/v1/)."""

from django.urls import URLPattern, path

from organizations import api_views

urlpatterns: list[URLPattern] = [
    path("organization", api_views.OrganizationView.as_view(), name="organization"),
    path("api-keys", api_views.ApiKeyListView.as_view(), name="api-key-list"),
    path("api-keys/<str:key_id>", api_views.ApiKeyDetailView.as_view(), name="api-key-detail"),
    path("members", api_views.MemberListView.as_view(), name="member-list"),
]
