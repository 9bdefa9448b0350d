"""The JSON API (namespace ``api``), mounted at /api/."""

from __future__ import annotations

from django.urls import path

from . import api, api_control, api_flows, api_ops, api_triggers

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
    path("v1/health/", api_ops.health_view, name="health"),
    path("v1/queue/status/", api_ops.queue_status, name="queue-status"),
    path("v1/queue/pause/", api_ops.queue_pause, name="queue-pause"),
    path("v1/queue/resume/", api_ops.queue_resume, name="queue-resume"),
    path("v1/stats/usage/", api_ops.stats_usage, name="stats-usage"),
    path("v1/stats/errors/", api_ops.stats_errors, name="stats-errors"),
    path("v1/stats/performance/", api_ops.stats_performance, name="stats-performance"),
    path("v1/session/status/", api_ops.session_status, name="session-status"),
    path("v1/runs/", api_ops.runs, name="runs"),
    path("v1/runs/<id:run_id>/", api_ops.run_detail, name="run"),
    path("v1/runs/<id:run_id>/result/", api_ops.run_result, name="run-result"),
    path("v1/runs/<id:run_id>/trace/", api_flows.run_trace, name="run-trace"),
    path("v1/runs/<id:run_id>/cancel/", api_ops.run_cancel, name="run-cancel"),
    path("v1/runs/<id:run_id>/retry/", api_ops.run_retry, name="run-retry"),
    path("v1/jobs/", api_ops.jobs, name="jobs"),
    path("v1/jobs/<str:name>/", api_ops.job_detail, name="job"),
    path("v1/control/status/", api_control.control_status, name="control-status"),
    path("v1/control/emergency-stop/", api_control.emergency_stop, name="emergency-stop"),
    path("v1/control/emergency-release/", api_control.emergency_release, name="emergency-release"),
    path("v1/control/requeue/", api_control.requeue, name="control-requeue"),
    path("v1/alerts/", api_ops.alerts_list, name="alerts"),
    path("v1/triggers/", api_triggers.triggers, name="triggers"),
    path("v1/triggers/preview/", api_triggers.trigger_preview, name="trigger-preview"),
    path("v1/triggers/<id:trigger_id>/", api_triggers.trigger, name="trigger"),
    path("v1/webhooks/", api_triggers.webhooks, name="webhooks"),
    path("v1/webhooks/deliveries/", api_triggers.webhook_deliveries, name="webhook-deliveries"),
    path("v1/webhooks/deliveries/<id:delivery_id>/", api_triggers.webhook_delivery, name="webhook-delivery"),
    path(
        "v1/webhooks/deliveries/<id:delivery_id>/redeliver/",
        api_triggers.webhook_redeliver,
        name="webhook-redeliver",
    ),
    path("v1/watches/", api_triggers.watches, name="watches"),
    path("<path:rest>", api.not_found),  # a JSON 404, not an endpoint (no name, not in the schema)
]
