"""The Celery application; queues `runs` (agent loops) and `introspect` (bundle checks)."""

import os
from typing import Any

from celery import Celery
from celery.app.defaults import DEFAULTS

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lightfast_cloud.settings")

app = Celery("lightfast_cloud")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _resolve_configuration(sender: Celery, source: Any, **kwargs: object) -> None:
    """Read every Celery setting from Django's settings once, when the app is configured.

    Otherwise each lookup goes through Django's settings object under both the prefixed and the
    plain name, raising AttributeError for every setting left at Celery's default: ~20 lookups
    per task published and per task run, 0.11 ms of the 0.64 ms a publish cost (measured).
    The settings are read from the environment at start-up and never change afterwards.
    """
    source.update({key: source[key] for key in DEFAULTS})


@app.on_after_finalize.connect
def _connect_worker_signals(sender: Celery, **kwargs: object) -> None:
    # Imported late: it needs Django's cache, configured once the app is finalized.
    import lightfast_cloud.gc_freeze  # noqa: F401
    import lightfast_cloud.worker_status  # noqa: F401
