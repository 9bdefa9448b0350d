from __future__ import annotations

import os

from django.conf import settings

from agentflow.lib.env import load_settings_or_exit
from agentflow.lib.webthreads import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentflow.settings")
load_settings_or_exit()  # a bad setting is one line on stderr and exit code 2, not a traceback
# Initialise Django (apps, settings) before importing anything that touches models.
# Django's handler with AGENTFLOW_WEB_THREADS long-lived request threads (not one per request).
django_asgi_app = get_asgi_application(threads=settings.AGENTFLOW_WEB_THREADS)

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
