"""REST API v1 routes of the bundles app (included at /api/v1/)."""

from django.urls import URLPattern, path

from agents import api_views

urlpatterns: list[URLPattern] = [
    path("bundles", api_views.BundleListView.as_view(), name="bundle-list"),
    path("bundles/<str:slug>", api_views.BundleDetailView.as_view(), name="bundle-detail"),
    path(
        "bundles/<str:slug>/versions", api_views.BundleVersionListView.as_view(), name="bundle-version-list"
    ),
    path(
        "bundles/<str:slug>/versions/<int:number>",
        api_views.BundleVersionDetailView.as_view(),
        name="bundle-version-detail",
    ),
    path(
        "bundles/<str:slug>/versions/<int:number>/activate",
        api_views.BundleVersionActivateView.as_view(),
        name="bundle-version-activate",
    ),
    path("bundles/<str:slug>/rollback", api_views.BundleRollbackView.as_view(), name="bundle-rollback"),
    path(
        "bundles/<str:slug>/tools/<str:tool>/invoke", api_views.ToolInvokeView.as_view(), name="tool-invoke"
    ),
    path("agents", api_views.AgentListView.as_view(), name="agent-list"),
]
