"""The Celery application; queues `runs` (agent loops) and `introspect` (bundle checks)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lightfast_cloud.settings")

app = Celery("lightfast_cloud")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_finalize.connect
def _connect_worker_signals(sender: Celery, **kwargs: object) -> None:
    # Imported late: it needs Django's cache, configured once the app is finalized.
    import lightfast_cloud.worker_status  # noqa: F401
