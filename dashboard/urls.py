"""The dashboard's pages, included at the site root (namespace `dashboard`)."""

from django.urls import URLPattern, path

from dashboard.views import accounts, organizations, overview
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
]
