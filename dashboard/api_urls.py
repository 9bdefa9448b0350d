"""The read-only JSON API (namespace ``api``), mounted at /api/."""

from __future__ import annotations

from django.urls import path

from . import api

app_name = "api"

urlpatterns = [
    path("v1/", api.index, name="index"),
    path("v1/schema/", api.schema, name="schema"),
    path("v1/gateways/", api.gateways, name="gateways"),
    path("v1/agents/", api.agents, name="agents"),
    path("v1/sessions/", api.sessions, name="sessions"),
    path("v1/config-history/", api.config_history, name="config-history"),
    path("v1/chat/<path:session_key>/", api.chat, name="chat"),
    path("v1/batches/", api.batches, name="batches"),
    path("v1/audit/", api.audit, name="audit"),
    path("<path:rest>", api.not_found),  # a JSON 404, not an endpoint (no name, not in the schema)
]
