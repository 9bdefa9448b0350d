# Celery's app is loaded with Django so @shared_task binds to it (Celery's Django guide).
from __future__ import annotations

from .celery import app as celery_app  # noqa: TID251 - the one place the app is loaded

__all__ = ("celery_app",)
