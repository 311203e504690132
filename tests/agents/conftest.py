"""The bundles tests: every test gets a media directory of its own (`media_root`, tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

# Defined in tests/bundles.py; importable from here for tests written before they moved.
from tests.bundles import sample, stored_files, upload  # noqa: F401


@pytest.fixture(autouse=True)
def _private_media_root(media_root: Path) -> Path:
    return media_root
