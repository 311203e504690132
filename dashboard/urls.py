"""The dashboard's pages, included at the site root (namespace `dashboard`)."""

from django.urls import URLPattern, path

from dashboard.views import (
    accounts,
    bundles,
    chat,
    invitations,
    organizations,
    overview,
    runs,
    settings,
    usage,
)
from dashboard.views.site import favicon

app_name = "dashboard"

urlpatterns: list[URLPattern] = [
    path("", overview.OverviewView.as_view(), name="overview"),
    path("overview/runs/", overview.RecentRunsFragment.as_view(), name="overview-runs"),
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
    path("accounts/invite/<str:token>/", invitations.InvitationView.as_view(), name="invitation"),
    # --- organizations
    path("organizations/new/", organizations.OrganizationCreateView.as_view(), name="organization-new"),
    path("organizations/switch/", organizations.OrganizationSwitchView.as_view(), name="organization-switch"),
    # --- settings: the page, and one POST address per change
    path("settings/", settings.SettingsView.as_view(), name="settings"),
    path("settings/organization/", settings.OrganizationProfileView.as_view(), name="settings-organization"),
    path("settings/api-keys/", settings.ApiKeyCreateView.as_view(), name="settings-apikey-create"),
    path(
        "settings/api-keys/<str:lookup_id>/revoke/",
        settings.ApiKeyRevokeView.as_view(),
        name="settings-apikey-revoke",
    ),
    path("settings/invitations/", settings.InvitationCreateView.as_view(), name="settings-invitation-create"),
    path(
        "settings/invitations/<int:invitation_id>/revoke/",
        settings.InvitationRevokeView.as_view(),
        name="settings-invitation-revoke",
    ),
    path(
        "settings/members/<int:membership_id>/role/",
        settings.MemberRoleView.as_view(),
        name="settings-member-role",
    ),
    path(
        "settings/members/<int:membership_id>/remove/",
        settings.MemberRemoveView.as_view(),
        name="settings-member-remove",
    ),
    path("settings/egress/", settings.EgressHostAddView.as_view(), name="settings-egress-add"),
    path(
        "settings/egress/<int:host_id>/remove/",
        settings.EgressHostRemoveView.as_view(),
        name="settings-egress-remove",
    ),
    path("settings/origins/", settings.AllowedOriginAddView.as_view(), name="settings-origin-add"),
    path(
        "settings/origins/<int:origin_id>/remove/",
        settings.AllowedOriginRemoveView.as_view(),
        name="settings-origin-remove",
    ),
    path("settings/variables/", settings.VariableSetView.as_view(), name="settings-variable-set"),
    path(
        "settings/variables/<str:key>/delete/",
        settings.VariableDeleteView.as_view(),
        name="settings-variable-delete",
    ),
    path("settings/model-provider/", settings.ModelProviderSetView.as_view(), name="settings-provider-set"),
    path(
        "settings/model-provider/clear/",
        settings.ModelProviderClearView.as_view(),
        name="settings-provider-clear",
    ),
    # --- bundles, chat, runs, usage (docs/dashboard.md, "Bundles, chat, runs and usage")
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
