"""Lightfast Cloud: the Django project (settings, routing, Celery app, embedded launcher)."""

from lightfast_cloud.celery import app as celery_app

__all__ = ["celery_app"]
