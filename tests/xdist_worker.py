"""Each pytest-xdist worker gets services of its own: a data directory, and a redis database.

Loaded with `-p tests.xdist_worker` (pyproject.toml's addopts), so that it runs before pytest-django
reads the settings: `LIGHTFAST_DATA_DIR` (the SQLite test database, the private redis-server's
socket, media, the sandbox's files) and `REDIS_URL` (the cache, the broker and the channel layer)
are read once, when the settings module is imported. pytest-django names each worker's test
database itself (`…_gw0`).

Outside xdist, and in xdist's controlling process, this module changes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
# lightfast_cloud/settings.py's default data directory.
_DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "var"


def _worker_index(worker: str) -> int:
    """`gw3` → 3."""
    return int(worker.removeprefix("gw"))


def _redis_url_for(url: str, index: int) -> str:
    """The URL's database number plus `index`: worker gw0 keeps the given database, gw1 the next."""
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss"}:
        raise RuntimeError(
            f"REDIS_URL {url!r}: a parallel test run needs a redis:// URL (each worker takes its own "
            "database number); run with -n 0 for another kind"
        )
    path = parts.path.strip("/")
    database = int(path) if path else 0
    return urlunsplit(parts._replace(path=f"/{database + index}"))


if _WORKER:
    _index = _worker_index(_WORKER)
    _base = Path(os.environ.get("LIGHTFAST_DATA_DIR") or _DEFAULT_DATA_DIR)
    # The settings create it (0700), as they do the data directory of a run without xdist.
    os.environ["LIGHTFAST_DATA_DIR"] = str(_base / _WORKER)
    if os.environ.get("REDIS_URL"):
        os.environ["REDIS_URL"] = _redis_url_for(os.environ["REDIS_URL"], _index)
