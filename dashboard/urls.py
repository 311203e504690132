"""The dashboard's pages, included at the site root (namespace `dashboard`)."""

from django.urls import URLPattern, path

from dashboard.views import accounts, bundles, chat, organizations, overview, runs, usage
from dashboard.views.site import favicon

app_name = "dashboard"

urlpatterns: list[URLPattern] = [
    path("", overview.OverviewView.as_view(), name="overview"),
    # Pages without an icon link (the admin's) still ask for /favicon.ico.
    path("favicon.ico", favicon, name="favicon"),
    # --- accounts
    path("accounts/login/", accounts.LoginView.as_view(), name="login"),
    path("accounts/logout/", accounts.LogoutView.as_view(), name="logout"),
    path("accounts/signup/", accounts.SignupView.as_view(), name="signup"),
    path("accounts/password-reset/", accounts.PasswordResetView.as_view(), name="password-reset"),
    path(
        "accounts/password-reset/sent/", accounts.PasswordResetDoneView.as_view(), name="password-reset-done"
    ),
    path(
        "accounts/reset/<uidb64>/<token>/",
        accounts.PasswordResetConfirmView.as_view(),
        name="password-reset-confirm",
    ),
    path(
        "accounts/reset/done/", accounts.PasswordResetCompleteView.as_view(), name="password-reset-complete"
    ),
    # --- organizations
    path("organizations/new/", organizations.OrganizationCreateView.as_view(), name="organization-new"),
    path("organizations/switch/", organizations.OrganizationSwitchView.as_view(), name="organization-switch"),
    # --- bundles, chat, runs, usage (docs/dashboard.md, "The pages")
    path("bundles/", bundles.BundleListView.as_view(), name="bundles"),
    path("bundles/<str:slug>/", bundles.BundleDetailView.as_view(), name="bundle-detail"),
    path("bundles/<str:slug>/rollback/", bundles.BundleRollbackView.as_view(), name="bundle-rollback"),
    path(
        "bundles/<str:slug>/versions/<int:number>/status/",
        bundles.VersionStatusView.as_view(),
        name="bundle-version-status",
    ),
    path(
        "bundles/<str:slug>/versions/<int:number>/activate/",
        bundles.VersionActivateView.as_view(),
        name="bundle-version-activate",
    ),
    path("bundles/<str:slug>/tools/<str:tool>/", bundles.ToolPlaygroundView.as_view(), name="bundle-tool"),
    path("chat/", chat.ChatIndexView.as_view(), name="chat"),
    path("chat/<str:bundle>/<str:agent>/", chat.ChatView.as_view(), name="chat-new"),
    path("chat/<str:bundle>/<str:agent>/<path:session>/", chat.ChatView.as_view(), name="chat-session"),
    path("runs/", runs.RunListView.as_view(), name="runs"),
    path("runs/<uuid:run_id>/", runs.RunDetailView.as_view(), name="run-detail"),
    path("usage/", usage.UsageView.as_view(), name="usage"),
]
