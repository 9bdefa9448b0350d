from __future__ import annotations

from django.urls import path

from . import consumers

# The one place the socket's path is written: the pages get it through {% live_socket_url %}.
WEBSOCKET_PATH = "ws/dashboard/"

websocket_urlpatterns = [path(WEBSOCKET_PATH, consumers.DashboardConsumer.as_asgi(), name="live")]
