"""Read an upgraded database with the current code and print what it finds, as JSON.

Run from the repository root as ``python tests/upgrade/check_upgraded.py data|app MANIFEST``
(``MANIFEST``: the JSON file ``seed_previous_release.py seed`` printed). ``data`` only reads;
``app`` also drives the pages, the admin and the API with Django's test client (which writes
sessions, ``last_login`` and the token's ``last_used_at``) and runs ``makemigrations --check``.
The test asserts on the output; this script decides nothing.
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from urllib.parse import quote


def data(manifest: dict) -> dict:
    from django.contrib.admin.models import LogEntry
    from django.contrib.auth.models import User
    from django.contrib.contenttypes.models import ContentType
    from django.db import connection
    from django_celery_beat.models import PeriodicTask

    from dashboard.models import ApiToken
    from fleet.models import Agent, AgentSession, ChatHistory, ConfigHistory, Gateway, HealthSample
    from scheduler.models import Alert, BatchRun
    from tests.upgrade.seed_previous_release import table_snapshot

    models = [
        Gateway,
        Agent,
        AgentSession,
        ConfigHistory,
        ChatHistory,
        HealthSample,
        Alert,
        ApiToken,
        BatchRun,
    ]
    staff = User.objects.get(pk=manifest["staff"])
    return {
        "snapshot": table_snapshot(connection),
        # The current models, through the ORM: which table each reads and the rows it sees there.
        "orm": {
            model._meta.label: {
                "db_table": model._meta.db_table,
                "pks": list(model.objects.order_by("pk").values_list("pk", flat=True)),
            }
            for model in models
        },
        "gateways": list(
            Gateway.objects.order_by("pk").values("pk", "name", "status", "scopes", "enabled", "token")
        ),
        "agents": list(
            Agent.objects.order_by("pk").values("pk", "agent_id", "gateway__name", "parent__agent_id")
        ),
        "sessions": list(
            AgentSession.objects.order_by("pk").values(
                "pk", "session_key", "title", "agent__name", "parent_id"
            )
        ),
        "config": list(ConfigHistory.objects.order_by("pk").values("pk", "hash", "config", "changed_paths")),
        "chat": list(ChatHistory.objects.order_by("pk").values("pk", "message_id", "text", "usage")),
        "alerts": list(Alert.objects.order_by("pk").values("pk", "message", "level")),
        "runs": list(
            BatchRun.objects.order_by("pk").values(
                "pk", "batch", "scope", "target_id", "target_name", "status"
            )
        ),
        "content_types": sorted(ContentType.objects.values_list("app_label", "model")),
        "staff_perms": {
            perm: staff.has_perm(perm)
            for perm in [
                "fleet.view_gateway",
                "fleet.change_gateway",
                "scheduler.view_alert",
                "scheduler.change_alert",
                "fleet.delete_gateway",
                "fleet.change_agent",
                "dashboard.change_gateway",
            ]
        },
        "log_entries": [
            {
                "content_type": [entry.content_type.app_label, entry.content_type.model],
                "object": [type(obj).__name__, obj.pk, str(obj)]
                if (obj := entry.get_edited_object())
                else None,
                "admin_url": entry.get_admin_url(),
            }
            for entry in LogEntry.objects.order_by("pk")
        ],
        "periodic_tasks": list(
            PeriodicTask.objects.order_by("name").values("name", "task", "args", "enabled")
        ),
        "token": {
            "authenticates": ApiToken.objects.filter(
                token_hash=ApiToken.hash(manifest["token"]["raw"])
            ).exists()
        },
    }


def app(manifest: dict) -> dict:
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client

    out = data(manifest)
    gateway = manifest["gateways"]["prod"]
    session_key = manifest["main_session_key"]
    pages = {
        "overview": "/",
        "batches": "/batches/",
        "config": f"/gateways/{gateway}/config/",
        "session": f"/gateways/{gateway}/sessions/{quote(session_key)}/",
        "api_sessions": "/api/v1/sessions/",
        "api_batches": "/api/v1/batches/",
        "admin_gateways": "/admin/fleet/gateway/",
        "admin_alerts": "/admin/scheduler/alert/",
        "admin_runs": "/admin/scheduler/batchrun/",
        "admin_periodic_tasks": "/admin/django_celery_beat/periodictask/",
    }
    pages.update({f"log_entry_{n}": entry["admin_url"] for n, entry in enumerate(out["log_entries"])})

    admin = Client()
    admin.force_login(User.objects.get(pk=manifest["admin"]))
    out["pages"] = {name: _get(admin, url) for name, url in pages.items()}

    # The staff user works in the admin with the permissions granted in the previous release.
    staff = Client()
    staff.force_login(User.objects.get(pk=manifest["staff"]))
    out["staff_pages"] = {
        "gateway_change": _get(staff, f"/admin/fleet/gateway/{gateway}/change/"),
        "alert_change": _get(staff, f"/admin/scheduler/alert/{manifest['open_alert']}/change/"),
        "agents_not_granted": _get(staff, "/admin/fleet/agent/"),
    }

    bearer = Client(headers={"Authorization": f"Bearer {manifest['token']['raw']}"})
    out["token"]["api_gateways"] = _get(bearer, "/api/v1/gateways/")

    stdout = io.StringIO()
    call_command("setup_schedules", stdout=stdout)
    out["setup_schedules"] = stdout.getvalue().splitlines()

    stdout = io.StringIO()
    try:
        call_command("makemigrations", check=True, dry_run=True, stdout=stdout)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out["makemigrations"] = {"exit": code, "output": stdout.getvalue()}
    return out


def _get(client, url: str) -> dict:
    try:
        response = client.get(url)
    except Exception as error:  # reported to the test, which shows it
        return {"url": url, "status": None, "error": repr(error)}
    body = response.content.decode(errors="replace") if response.status_code == 200 else ""
    return {"url": url, "status": response.status_code, "body": body}


def main() -> None:
    # Run as a script, Python put this file's folder first on sys.path; the repository root is
    # what must resolve (``fleet``, ``tests.upgrade`` …).
    sys.path[0] = str(Path.cwd())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentflow.settings")
    import django

    django.setup()
    from django.test.utils import setup_test_environment

    setup_test_environment()  # the test client's "testserver" host becomes an allowed host
    mode, manifest_path = sys.argv[1], sys.argv[2]
    manifest = json.loads(Path(manifest_path).read_text())
    result = {"data": data, "app": app}[mode](manifest)
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
