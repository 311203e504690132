"""REST API v1 routes of the organizations app (included at /api/v1/)."""

from django.urls import URLPattern, path

from organizations import api_views, usage_views

urlpatterns: list[URLPattern] = [
    path("organization", api_views.OrganizationView.as_view(), name="organization"),
    path("api-keys", api_views.ApiKeyListView.as_view(), name="api-key-list"),
    path("api-keys/<str:key_id>", api_views.ApiKeyDetailView.as_view(), name="api-key-detail"),
    path("members", api_views.MemberListView.as_view(), name="member-list"),
    path("variables", api_views.VariableListView.as_view(), name="variable-list"),
    path("variables/<str:key>", api_views.VariableDetailView.as_view(), name="variable-detail"),
    path("egress/hosts", api_views.EgressHostListView.as_view(), name="egress-host-list"),
    path("egress/hosts/<str:pattern>", api_views.EgressHostDetailView.as_view(), name="egress-host-detail"),
    path("allowed-origins", api_views.AllowedOriginListView.as_view(), name="allowed-origin-list"),
    path(
        "allowed-origins/<int:origin_id>",
        api_views.AllowedOriginDetailView.as_view(),
        name="allowed-origin-detail",
    ),
    path("usage", usage_views.UsageView.as_view(), name="usage"),
    path("audit", usage_views.AuditLogView.as_view(), name="audit-log"),
    path("model-provider", api_views.ModelProviderView.as_view(), name="model-provider"),
]
