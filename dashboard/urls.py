from django.urls import path

from . import api, views

urlpatterns = [
    path("", views.overview, name="overview"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics_view, name="metrics"),
    path("api/v1/gateways/", api.gateways, name="api-gateways"),
    path("api/v1/agents/", api.agents, name="api-agents"),
    path("api/v1/sessions/", api.sessions, name="api-sessions"),
    path("api/v1/config-history/", api.config_history, name="api-config-history"),
    path("api/v1/chat/<path:session_key>/", api.chat, name="api-chat"),
    path("api/v1/batches/", api.batches, name="api-batches"),
    path("api/<path:rest>", api.not_found),
]
