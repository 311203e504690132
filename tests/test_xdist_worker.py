"""tests/xdist_worker.py: the workers of a parallel run never share a data dir, database or redis."""

from __future__ import annotations

import os

import pytest
from django.conf import settings
from django.db import connection

from tests.xdist_worker import _redis_url_for, _worker_index


def test_each_worker_takes_the_next_redis_database() -> None:
    assert _worker_index("gw0") == 0
    assert _worker_index("gw11") == 11
    assert _redis_url_for("redis://127.0.0.1:6379/1", 0) == "redis://127.0.0.1:6379/1"
    assert _redis_url_for("redis://127.0.0.1:6379/1", 2) == "redis://127.0.0.1:6379/3"
    assert _redis_url_for("redis://:secret@host:6380", 1) == "redis://:secret@host:6380/1"
    assert _redis_url_for("rediss://host/4?ssl_cert_reqs=none", 1) == "rediss://host/5?ssl_cert_reqs=none"
    with pytest.raises(RuntimeError, match="needs a redis:// URL"):
        _redis_url_for("unix:///run/redis.sock", 1)


@pytest.mark.django_db
def test_this_worker_has_its_own_data_dir_database_and_redis() -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        # One process: the settings' own data directory, nothing renamed.
        assert "gw" not in settings.DATA_DIR.name
        return
    assert settings.DATA_DIR.name == worker
    assert str(settings.DATA_DIR) == os.environ["LIGHTFAST_DATA_DIR"]
    if settings.REDIS_EMBEDDED:
        assert settings.REDIS_URL == f"unix://{settings.DATA_DIR / 'redis.sock'}"
    else:
        assert settings.REDIS_URL == os.environ["REDIS_URL"]
    if connection.vendor == "sqlite":
        assert str(connection.settings_dict["NAME"]).startswith(str(settings.DATA_DIR))
    else:
        assert str(connection.settings_dict["NAME"]).endswith(f"_{worker}")
