from __future__ import annotations

from django.urls import path

from .views import (
    alerts,
    assets,
    automation,
    batches,
    config,
    fleet,
    flows,
    jobs,
    notifications,
    queue,
    runs,
    sessions,
    status,
    stops,
    triggers,
    watches,
    webhooks,
)

"""The operator pages and fragments (namespace ``dashboard``); the JSON API is in ``api_urls``."""

app_name = "dashboard"

urlpatterns = [
    path("", fleet.overview_page, name="overview"),
    path("healthz", status.healthz, name="healthz"),
    path("favicon.ico", assets.favicon, name="favicon"),
    path("metrics", status.metrics_view, name="metrics"),
    path("fragments/gateways/<id:gateway_id>/", fleet.gateway_fragment, name="fragment-gateway"),
    path("fragments/gateways/<id:gateway_id>/health/", fleet.health_fragment, name="fragment-health"),
    path("fragments/gateways/<id:gateway_id>/counts/", fleet.counts_fragment, name="fragment-counts"),
    path(
        "fragments/gateways/<id:gateway_id>/agents/<id:agent_pk>/sessions/",
        fleet.agent_sessions_fragment,
        name="fragment-agent-sessions",
    ),
    path("gateways/<id:gateway_id>/config/", config.config_history, name="config-history"),
    path("gateways/<id:gateway_id>/agents/<id:agent_pk>/new-chat", sessions.new_chat, name="new-chat"),
    path(
        "gateways/<id:gateway_id>/messages/<id:message_id>/", sessions.message_detail, name="message-detail"
    ),
    path(
        "gateways/<id:gateway_id>/sessions/<path:session_key>/send",
        sessions.session_send,
        name="session-send",
    ),
    path(
        "gateways/<id:gateway_id>/sessions/<path:session_key>/abort",
        sessions.session_abort,
        name="session-abort",
    ),
    path(
        "gateways/<id:gateway_id>/sessions/<path:session_key>/",
        sessions.session_detail,
        name="session-detail",
    ),
    path("batches/", batches.batch_runs, name="batch-runs"),
    path("queue/", queue.queue, name="queue"),
    path("queue/pause", queue.queue_pause, name="queue-pause"),
    path("queue/resume", queue.queue_resume, name="queue-resume"),
    path("queue/unblock", queue.queue_unblock, name="queue-unblock"),
    path("fragments/queue/", queue.queue_fragment, name="fragment-queue"),
    path("runs/", runs.runs, name="runs"),
    path("runs/<id:run_id>/", runs.run_detail, name="run-detail"),
    path("runs/<id:run_id>/result", runs.run_result, name="run-result"),
    path("runs/<id:run_id>/trace/", flows.run_trace, name="run-trace"),
    path("runs/<id:run_id>/cancel", runs.run_cancel, name="run-cancel"),
    path("runs/<id:run_id>/retry", runs.run_retry, name="run-retry"),
    path("stops/", stops.stops_page, name="stops"),
    path("stops/engage", stops.stop_engage, name="stop-engage"),
    path("stops/<id:stop_id>/", stops.stop_detail, name="stop-detail"),
    path("stops/<id:stop_id>/release", stops.stop_release, name="stop-release"),
    path("stops/<id:stop_id>/requeue", stops.stop_requeue, name="stop-requeue"),
    path("fragments/stops/banner", stops.stop_banner, name="fragment-stop-banner"),
    path("flows/", flows.flows, name="flows"),
    path("flows/run/", flows.run_flow, name="flow-run"),  # before the detail: "run" is no flow's page
    path("flows/<slug:name>/", flows.flow_detail, name="flow-detail"),
    path("jobs/", jobs.jobs, name="jobs"),
    path("jobs/<id:job_id>/", jobs.job_detail, name="job-detail"),
    path("jobs/<id:job_id>/run", jobs.job_run_now, name="job-run-now"),
    path("notifications/", notifications.notifications, name="notifications"),
    path(
        "notifications/channels/<id:channel_id>/test",
        notifications.notification_test,
        name="notification-test",
    ),
    path("alerts/", alerts.alerts, name="alerts"),
    path("triggers/watches/", watches.watches, name="watches"),
    path("triggers/watches/<id:watch_id>/", watches.watch_detail, name="watch-detail"),
    path("automation/", automation.automation, name="automation"),
    path(
        "automation/gateways/<id:gateway_id>/cron",
        automation.gateway_cron_switch,
        name="automation-gateway-cron",
    ),
    path("triggers/webhooks/", webhooks.webhooks, name="webhooks"),
    path("triggers/webhooks/new", webhooks.webhook_edit, name="webhook-new"),
    path("triggers/webhooks/<id:endpoint_id>/", webhooks.webhook_detail, name="webhook-detail"),
    path("triggers/webhooks/<id:endpoint_id>/edit", webhooks.webhook_edit, name="webhook-edit"),
    path("triggers/webhooks/deliveries/", webhooks.webhook_deliveries, name="webhook-deliveries"),
    path(
        "triggers/webhooks/deliveries/<id:delivery_id>/", webhooks.webhook_delivery, name="webhook-delivery"
    ),
    path(
        "triggers/webhooks/deliveries/<id:delivery_id>/redeliver",
        webhooks.webhook_redeliver,
        name="webhook-redeliver",
    ),
    path("triggers/", triggers.triggers, name="triggers"),
    path("triggers/schedules/<id:schedule_id>/", triggers.schedule_detail, name="schedule-detail"),
    path("triggers/schedules/<id:schedule_id>/enable", triggers.schedule_enable, name="schedule-enable"),
    path("triggers/schedules/<id:schedule_id>/disable", triggers.schedule_disable, name="schedule-disable"),
    path("triggers/schedules/<id:schedule_id>/fire", triggers.schedule_fire, name="schedule-fire"),
]
