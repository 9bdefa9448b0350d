"""Fill a database the way the previous release (commit 4f9e87b) left it, then print what is in it.

Run with that release's code as the working directory (``python <this file> seed|dump``): the
fleet models are still ``dashboard.Gateway`` … ``dashboard.Alert`` there and ``BatchRun`` has a
``gateway`` foreign key. This file imports nothing of the current code, so it runs on both; the
current code imports :func:`table_snapshot` from it to compare rows table by table.

``seed`` writes the data and prints ``{"manifest": ..., "snapshot": ...}``; ``dump`` prints only
the snapshot (used after migrating back down).
"""

from __future__ import annotations

import datetime
import decimal
import json
import os
import sys
import uuid
from pathlib import Path

# Every table a user's data lives in, read raw (no model), so the same reader works on the old
# schema and the new one and a column renamed or dropped on the way shows up.
TABLES = (
    "auth_user",
    "auth_group",
    "auth_permission",
    "auth_user_user_permissions",
    "django_content_type",
    "django_admin_log",
    "django_migrations",
    "dashboard_gateway",
    "dashboard_agent",
    "dashboard_agentsession",
    "config_history",
    "chat_history",
    "dashboard_healthsample",
    "dashboard_alert",
    "dashboard_apitoken",
    "scheduler_batchrun",
    "django_celery_beat_periodictask",
    "django_celery_beat_intervalschedule",
    "django_celery_beat_crontabschedule",
)


def _plain(value):
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, memoryview | bytes):
        return bytes(value).hex()
    return value


def table_snapshot(connection) -> dict[str, list[dict]]:
    """Every row of :data:`TABLES`, as plain JSON values, ordered by primary key."""
    snapshot = {}
    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)} ORDER BY 1")
            names = [column[0] for column in cursor.description]
            snapshot[table] = [
                {name: _plain(value) for name, value in zip(names, row, strict=True)}
                for row in cursor.fetchall()
            ]
    return snapshot


def seed() -> dict:
    """The previous release's objects, one or more of each kind, with values worth comparing."""
    from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
    from django.contrib.auth.models import Permission, User
    from django.contrib.contenttypes.models import ContentType
    from django.core.management import call_command
    from django.utils import timezone
    from django_celery_beat.models import PeriodicTask

    from dashboard.models import (
        Agent,
        AgentSession,
        Alert,
        ApiToken,
        ChatHistory,
        ConfigHistory,
        Gateway,
        HealthSample,
    )
    from scheduler.models import BatchRun

    now = timezone.now().replace(microsecond=0)
    minutes = datetime.timedelta(minutes=1)

    admin = User.objects.create_superuser("upgrade-admin", "admin@example.com", "admin-pass")
    staff = User.objects.create_user("upgrade-staff", password="staff-pass", is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="dashboard",
            codename__in=["view_gateway", "change_gateway", "view_alert", "change_alert"],
        )
    )

    # A gateway that cannot be reached (the discard port on loopback): pages must render from
    # the database alone, as they do when a gateway is down.
    prod = Gateway.objects.create(
        name="prod-gateway",
        url="ws://127.0.0.1:9/",
        token="prod-secret-token",
        status=Gateway.Status.CONNECTED,
        status_reason="hello-ok",
        version="2026.3.1",
        protocol=4,
        scopes=["operator.read", "operator.write"],
        latency_ms=12.5,
        last_connected_at=now - minutes,
        last_checked_at=now,
    )
    lab = Gateway.objects.create(
        name="lab-gateway",
        url="ws://127.0.0.1:9/lab",
        enabled=False,
        status=Gateway.Status.AUTH_FAILED,
        status_reason="token rejected",
        last_error_code="AUTH_TOKEN_MISMATCH",
    )

    main = Agent.objects.create(
        gateway=prod, agent_id="main", name="Main Agent", emoji="🦞", model="stub/echo", is_default=True
    )
    helper = Agent.objects.create(gateway=prod, agent_id="helper", name="Helper Agent", parent=main)
    solo = Agent.objects.create(gateway=lab, agent_id="solo", name="Solo Agent")

    main_session = AgentSession.objects.create(
        gateway=prod,
        agent=main,
        session_key="agent:main:main",
        session_id="sess-1",
        agent_key="main",
        kind="direct",
        title="Quarterly report session",
        status=AgentSession.Status.ACTIVE,
        has_active_run=True,
        last_run_id="run-42",
        model="stub/echo",
        input_tokens=1200,
        output_tokens=340,
        total_tokens=1540,
        gw_created_at=now - 30 * minutes,
        gw_updated_at=now - minutes,
        last_interaction_at=now - minutes,
        run_started_at=now - minutes,
    )
    AgentSession.objects.create(
        gateway=prod,
        agent=helper,
        session_key="agent:helper:subagent:1",
        agent_key="helper",
        title="Helper subtask",
        status=AgentSession.Status.IDLE,
        parent_session_key=main_session.session_key,
        parent=main_session,
    )
    AgentSession.objects.create(gateway=lab, agent=solo, session_key="agent:solo:main", title="Lab session")

    ConfigHistory.objects.create(
        gateway=prod,
        hash="cfg-hash-1",
        config={"agents": {"list": [{"id": "main"}]}, "gateway": {"auth": {"token": "[redacted]"}}},
        created_at=now - 20 * minutes,
    )
    ConfigHistory.objects.create(
        gateway=prod,
        hash="cfg-hash-2",
        config={
            "agents": {"list": [{"id": "main"}, {"id": "helper"}]},
            "gateway": {"auth": {"token": "[redacted]"}},
        },
        changed_paths=["agents.list"],
        diff='-  "list": [{"id": "main"}]\n+  "list": [{"id": "main"}, {"id": "helper"}]\n',
        created_at=now - 10 * minutes,
    )

    for n, (role, text) in enumerate(
        [
            ("user", "Draft the quarterly report"),
            ("assistant", "Here is the quarterly draft"),
            ("user", "Thanks"),
        ]
    ):
        ChatHistory.objects.create(
            gateway=prod,
            session_key=main_session.session_key,
            message_id=f"msg-{n}",
            role=role,
            text=text,
            timestamp=now - (10 - n) * minutes,
            run_id="run-42" if role == "assistant" else "",
            usage={"input": 100, "output": 40} if role == "assistant" else None,
        )

    HealthSample.objects.create(gateway=prod, checked_at=now - 2 * minutes, connected=True, latency_ms=11.0)
    HealthSample.objects.create(gateway=prod, checked_at=now - minutes, connected=True, latency_ms=14.0)
    HealthSample.objects.create(
        gateway=lab, checked_at=now - minutes, connected=False, error="token rejected"
    )

    open_alert = Alert.objects.create(
        level=Alert.Level.ERROR, source="BATCH-004", message="History cleanup failed"
    )
    Alert.objects.create(
        level=Alert.Level.WARNING, source="BATCH-005", message="lab-gateway unreachable", resolved_at=now
    )

    token, raw_token = ApiToken.issue(admin, "ci-reader")

    runs = {
        "prod_sessions": BatchRun.objects.create(
            batch="BATCH-001",
            gateway=prod,
            started_at=now - 3 * minutes,
            duration_ms=42.0,
            status="ok",
            counts={"sessions": 2},
        ),
        "lab_config": BatchRun.objects.create(
            batch="BATCH-002",
            gateway=lab,
            started_at=now - 2 * minutes,
            duration_ms=5.0,
            status="error",
            error="AUTH_TOKEN_MISMATCH: token rejected",
        ),
        "cleanup": BatchRun.objects.create(
            batch="BATCH-004",
            started_at=now - minutes,
            duration_ms=250.0,
            status="ok",
            counts={"config_deleted": 0, "chat_deleted": 0},
        ),
        "prod_health": BatchRun.objects.create(
            batch="BATCH-005",
            gateway=prod,
            started_at=now,
            duration_ms=13.0,
            status="ok",
        ),
    }

    # Older history, as the previous release kept it (it never deleted runs): many runs per
    # gateway, so a migration that rewrites them one run at a time shows in its statement count.
    BatchRun.objects.bulk_create(
        BatchRun(
            batch="BATCH-003",
            gateway=(prod, lab)[n % 2],
            started_at=now - datetime.timedelta(hours=1, seconds=5 * n),
            duration_ms=1.0,
            status="ok",
            counts={"messages": n},
        )
        for n in range(40)
    )

    call_command("setup_schedules", verbosity=0)
    # An operator's edit in the admin (BATCH-003 paused) must survive the upgrade too.
    PeriodicTask.objects.filter(args='["BATCH-003"]').update(enabled=False)

    LogEntry.objects.create(
        user=admin,
        content_type=ContentType.objects.get_for_model(Gateway),
        object_id=str(prod.pk),
        object_repr=str(prod),
        action_flag=ADDITION,
        change_message=json.dumps([{"added": {}}]),
    )
    LogEntry.objects.create(
        user=staff,
        content_type=ContentType.objects.get_for_model(Alert),
        object_id=str(open_alert.pk),
        object_repr=str(open_alert),
        action_flag=CHANGE,
        change_message=json.dumps([{"changed": {"fields": ["Message"]}}]),
    )

    return {
        "admin": admin.pk,
        "staff": staff.pk,
        "gateways": {"prod": prod.pk, "lab": lab.pk},
        "main_session_key": main_session.session_key,
        "open_alert": open_alert.pk,
        "token": {"pk": token.pk, "raw": raw_token, "hash": token.token_hash},
        "runs": {name: run.pk for name, run in runs.items()},
    }


def main() -> None:
    # Run as a script, Python put this file's folder first on sys.path; the release under test
    # (the working directory) must be what ``dashboard`` and ``scheduler`` resolve to.
    sys.path[0] = str(Path.cwd())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentflow.settings")
    import django

    django.setup()
    from django.db import connection, transaction

    command = sys.argv[1]
    if command == "seed":
        with transaction.atomic():
            manifest = seed()
        print(json.dumps({"manifest": manifest, "snapshot": table_snapshot(connection)}))
    elif command == "dump":
        print(json.dumps({"snapshot": table_snapshot(connection)}))
    else:
        raise SystemExit(f"unknown command {command!r}: seed or dump")


if __name__ == "__main__":
    main()
