from __future__ import annotations

from typing import Any

from django.urls import path

from . import consumers

# The one place the socket's path is written: the pages get it through {% live_socket_url %}.
WEBSOCKET_PATH = "ws/dashboard/"

# django-stubs types path()'s target as a view returning an HttpResponse; Channels routes the same
# URLPattern to an ASGI application, which the two stub packages do not reconcile. list[Any] is the
# hand-over to URLRouter (channels' stubs want their private pattern type there).
websocket_urlpatterns: list[Any] = [
    path(WEBSOCKET_PATH, consumers.DashboardConsumer.as_asgi(), name="live"),  # type: ignore[arg-type]
]
