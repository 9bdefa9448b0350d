from __future__ import annotations

import gc
import os

from django.conf import settings

from agentflow.lib.env import load_settings_or_exit
from agentflow.lib.webthreads import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentflow.settings")
load_settings_or_exit()  # a bad setting is one line on stderr and exit code 2, not a traceback
# Initialise Django (apps, settings) before importing anything that touches models.
# Django's handler with AGENTFLOW_WEB_THREADS long-lived request threads (not one per request).
django_asgi_app = get_asgi_application(threads=settings.AGENTFLOW_WEB_THREADS)

from agentflow.lib import heartbeat  # noqa: E402

if settings.ENVIRONMENT != "test":  # the tests' servers would show as web processes
    heartbeat.start("web")

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from agentflow.lib.origin import SameOriginValidator  # noqa: E402
from dashboard.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # The Origin must be this site itself (scheme, host and port) or a CSRF_TRUSTED_ORIGINS entry.
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

# Everything loaded so far (Django, the apps, the URL conf and its views) lives as long as the
# process: out of the collector's sight, a full collection no longer walks it. Before, at 200
# requests/s a full collection every ~4 s held the GIL for ~110 ms and every request then waited
# (bench/bench_webhooks.py's bare view: p99 68-93 ms, 10.7 ms with this).
from django.urls import get_resolver  # noqa: E402

get_resolver().url_patterns  # noqa: B018 - imports the URL conf and every view module now
gc.freeze()
