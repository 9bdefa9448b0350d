from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import beat_init, task_postrun, worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentflow.settings")

app = Celery("agentflow")


@app.on_configure.connect
def _settings_or_exit(sender: Celery, **kwargs: Any) -> None:
    """Read the Django settings before Celery does: a bad one is one line and exit code 2."""
    from agentflow.lib.env import load_settings_or_exit

    load_settings_or_exit()


app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


WORKER_CONN_MAX_AGE = 60


@worker_init.connect
def _keep_database_connections(**kwargs: Any) -> None:
    """A worker reuses its database connection across tasks (CELERY_DB_REUSE_MAX) for up to
    WORKER_CONN_MAX_AGE seconds, also where a DATABASES entry sets no CONN_MAX_AGE of its own.
    Sent before a prefork pool forks."""
    from django.conf import settings

    for database in settings.DATABASES.values():
        if not database.get("CONN_MAX_AGE"):
            database["CONN_MAX_AGE"] = WORKER_CONN_MAX_AGE


@worker_init.connect
def _worker_heartbeat(**kwargs: Any) -> None:
    """The worker's main process leaves a heartbeat (``manage.py automation status``)."""
    from agentflow.lib import heartbeat

    heartbeat.start("worker")


@beat_init.connect
def _beat_heartbeat(**kwargs: Any) -> None:
    from agentflow.lib import heartbeat

    heartbeat.start("beat")


@task_postrun.connect
def _close_unusable_connections(**kwargs: Any) -> None:
    """After each task: a connection that errored and no longer answers, or is past its age, is
    closed (the next task opens a fresh one), as Django does around each request."""
    from django.db import close_old_connections

    close_old_connections()
