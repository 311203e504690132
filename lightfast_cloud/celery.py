"""The Celery application; queues `runs` (agent loops) and `introspect` (bundle checks)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lightfast_cloud.settings")

app = Celery("lightfast_cloud")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
