from __future__ import annotations

import os
from typing import Any

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentflow.settings")

app = Celery("agentflow")


@app.on_configure.connect
def _settings_or_exit(sender: Celery, **kwargs: Any) -> None:
    """Read the Django settings before Celery does: a bad one is one line and exit code 2."""
    from agentflow.lib.env import load_settings_or_exit

    load_settings_or_exit()


app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
