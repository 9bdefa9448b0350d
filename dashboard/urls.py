from django.urls import path

from . import api, views

urlpatterns = [
    path("", views.overview_page, name="overview"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics_view, name="metrics"),
    path("fragments/gateways/<int:gateway_id>/", views.gateway_fragment, name="fragment-gateway"),
    path("fragments/gateways/<int:gateway_id>/health/", views.health_fragment, name="fragment-health"),
    path(
        "fragments/gateways/<int:gateway_id>/agents/<int:agent_pk>/sessions/",
        views.agent_sessions_fragment,
        name="fragment-agent-sessions",
    ),
    path("gateways/<int:gateway_id>/config/", views.config_history, name="config-history"),
    path("gateways/<int:gateway_id>/messages/<int:message_id>/", views.message_detail, name="message-detail"),
    path(
        "gateways/<int:gateway_id>/sessions/<path:session_key>/send", views.session_send, name="session-send"
    ),
    path(
        "gateways/<int:gateway_id>/sessions/<path:session_key>/abort",
        views.session_abort,
        name="session-abort",
    ),
    path(
        "gateways/<int:gateway_id>/sessions/<path:session_key>/", views.session_detail, name="session-detail"
    ),
    path("batches/", views.batch_runs, name="batch-runs"),
    path("api/v1/gateways/", api.gateways, name="api-gateways"),
    path("api/v1/agents/", api.agents, name="api-agents"),
    path("api/v1/sessions/", api.sessions, name="api-sessions"),
    path("api/v1/config-history/", api.config_history, name="api-config-history"),
    path("api/v1/chat/<path:session_key>/", api.chat, name="api-chat"),
    path("api/v1/batches/", api.batches, name="api-batches"),
    path("api/<path:rest>", api.not_found),
]
