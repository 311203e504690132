"""Fixtures of the dashboard tests: the live stack and browser pages (tests/dashboard/live.py), and
signed-in Django test clients."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tests.browser import chromium  # noqa: F401
from tests.dashboard.live import live, live_static_root, page, phone_page  # noqa: F401


@pytest.fixture
def member_client() -> Any:
    """`member_client(user)`: a Django test client signed in as `user` (CSRF checks on)."""

    def signed_in(user: Any) -> Client:
        client = Client(enforce_csrf_checks=False)
        client.force_login(user)
        return client

    return signed_in
