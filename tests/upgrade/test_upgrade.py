"""The upgrade the way a user does it: a database the previous release made, with data in it,
migrated by this code, loses nothing and the app works on it; migrating back gives the previous
release its database back.

The previous release is commit 4f9e87b, the last one before the restructure: the fleet models
lived in the ``dashboard`` app and ``scheduler.BatchRun`` had a ``gateway`` foreign key. Its
code is taken from git and run in subprocesses with the shared virtualenv, against a database of
this test's own (a SQLite file, or a fresh PostgreSQL database when the suite runs on one):

1. previous release: ``manage.py migrate``, then ``seed_previous_release.py seed`` (rows of every
   kind, the schedules, users with permissions, admin log entries, an API token);
2. this code: ``migrate``, then ``check_upgraded.py data``;
3. this code: ``migrate executor zero``, ``migrate flows zero``, ``migrate fleet zero`` then
   ``migrate scheduler 0001``;
   previous release: ``dump``;
4. this code: ``migrate`` again, then ``check_upgraded.py app`` (pages, admin, API, token,
   ``makemigrations --check``).

This code's migrations run through ``migrate.py`` (Django's migrate command plus a count of the
statements rewriting batch runs).

The steps run once (a module fixture); each test below asserts one promise on their output.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings

from tests.upgrade.seed_previous_release import TABLES

pytestmark = pytest.mark.upgrade

PREVIOUS_RELEASE = "4f9e87b"
ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# The interpreter running the suite is the shared virtualenv's: both releases run on it.
PYTHON = sys.executable

MOVED = {
    "gateway": "fleet",
    "agent": "fleet",
    "agentsession": "fleet",
    "confighistory": "fleet",
    "chathistory": "fleet",
    "healthsample": "fleet",
    "alert": "scheduler",
}
NEW_MIGRATIONS = {
    ("scheduler", "0002_batch_registry_and_alert"),
    ("fleet", "0001_initial"),
    ("dashboard", "0002_move_models_out"),
    ("fleet", "0002_encrypt_gateway_tokens"),
    ("scheduler", "0003_audit_and_roles"),
    ("dashboard", "0003_api_token_role"),
    ("scheduler", "0004_batchrun_running_lost"),
    ("scheduler", "0005_jobs_runs_attempts"),
    ("scheduler", "0006_run_window_indexes"),
    ("scheduler", "0007_queue_page_indexes"),
    ("scheduler", "0008_batch_runs"),
    ("scheduler", "0009_provider_block"),
    ("scheduler", "0010_run_finished_covering_index"),
    ("scheduler", "0011_emergency_stop"),
    ("scheduler", "0012_notifications"),
    ("scheduler", "0013_stop_conditions"),
    ("fleet", "0003_session_tokens"),
    ("scheduler", "0014_alert_rules"),
    ("scheduler", "0015_file_watches"),
    ("scheduler", "0016_result_actions"),  # issue 11 §4
    ("webhooks", "0001_initial"),  # issue 11 §2
    ("scheduler", "0017_schedule_triggers"),  # issue 11 §1
    ("executor", "0001_initial"),  # issue 12 §1
    ("flows", "0001_initial"),  # issue 12 §2-3
    ("webhooks", "0002_delivery_id_index"),  # issue 11: the intake's lookups use an index
    ("scheduler", "0018_run_dedupe_key_index"),
}
# Models (and so content types) the previous release did not have: the audit and django-axes'.
NEW_CONTENT_TYPES = {
    ("scheduler", "auditentry"),
    # the execution queue (issue 9)
    ("scheduler", "job"),
    ("scheduler", "run"),
    ("scheduler", "attempt"),
    ("scheduler", "queuepause"),
    ("scheduler", "providerblock"),
    ("scheduler", "emergencystop"),  # issue 10
    ("scheduler", "channel"),
    ("scheduler", "channelthread"),
    ("scheduler", "notification"),
    ("scheduler", "delivery"),
    ("scheduler", "stopcondition"),
    ("scheduler", "conditionhit"),
    ("scheduler", "alertrule"),  # issue 10 §4
    ("scheduler", "watch"),  # issue 11 §3
    ("scheduler", "watchfile"),
    ("scheduler", "watchevent"),
    ("scheduler", "resultaction"),  # issue 11 §4
    ("scheduler", "resultdelivery"),
    ("webhooks", "endpoint"),  # issue 11 §2
    ("webhooks", "delivery"),
    ("scheduler", "schedule"),  # issue 11 §1
    ("scheduler", "schedulefire"),
    ("executor", "disabledentry"),  # issue 12 §1
    ("executor", "execution"),
    ("flows", "flow"),  # issue 12 §2-3
    ("flows", "flowrun"),
    ("flows", "span"),
    ("axes", "accessattempt"),
    ("axes", "accesslog"),
    ("axes", "accessfailurelog"),
    ("axes", "accessattemptexpiration"),
}
# Tables a new model's migration adds rows to: compared by the rows the previous release had.
GROWN_TABLES = {"auth_group", "auth_permission", "django_content_type"}
# The columns BatchRun.gateway became (scheduler 0002).
TARGET_COLUMNS = ("scope", "target_id", "target_name")
# What scheduler 0004 adds to a run (empty on the runs of the previous release).
LIVENESS_COLUMNS = {"heartbeat_at": None, "worker": "", "lock_token": ""}
# What fleet 0003 adds to a session (the overview's context window and preview; filled by the next poll).
SESSION_COLUMNS = {"context_tokens": 0, "last_message_preview": ""}
# scheduler 0012: an alert of the previous release is one without a rule, seen once.
ALERT_COLUMNS = {"rule": "", "subject": "", "last_seen": None, "count": 1, "value": None, "reopened": 0}


@dataclass
class Upgrade:
    manifest: dict
    before: dict  # table snapshot the previous release left
    upgraded: dict  # check_upgraded.py data, after the first migrate
    batchrun_updates: dict  # UPDATEs of scheduler_batchrun per migrate step of this code
    downgraded: dict  # table snapshot after migrating back, read by the previous release
    app: dict  # check_upgraded.py app, after migrating up again


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 180) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} (in {cwd}) exited {result.returncode}\n"
            f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-8000:]}"
        )
    return result.stdout


def last_json(stdout: str) -> dict:
    """The JSON document a script printed last (Django may log lines before it)."""
    return json.loads(stdout.strip().splitlines()[-1])


def extract_previous_release(target: Path) -> None:
    known = subprocess.run(
        ["git", "cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}"], cwd=ROOT, capture_output=True, text=True
    )
    if known.returncode != 0:
        pytest.fail(
            f"commit {PREVIOUS_RELEASE} (the previous release) is not in this repository's history "
            f"({known.stderr.strip()}): the upgrade test needs a full clone (git fetch --unshallow)"
        )
    archive = subprocess.Popen(["git", "archive", PREVIOUS_RELEASE], cwd=ROOT, stdout=subprocess.PIPE)
    untar = subprocess.run(["tar", "-x", "-C", str(target)], stdin=archive.stdout, capture_output=True)
    archive.stdout.close()  # type: ignore[union-attr]
    if archive.wait() != 0 or untar.returncode != 0:
        pytest.fail(f"git archive {PREVIOUS_RELEASE} | tar -x failed: {untar.stderr.decode()}")


@pytest.fixture(scope="module")
def database_url(tmp_path_factory) -> Iterator[str]:
    """A database of this test's own, on the engine the suite runs on."""
    if "postgresql" not in settings.DATABASES["default"]["ENGINE"]:
        yield f"sqlite:///{tmp_path_factory.mktemp('upgrade-db') / 'agentflow.sqlite3'}"
        return

    import psycopg
    from psycopg import sql

    suite = urlsplit(settings.DATABASE_URL)
    name = f"agentflow_upgrade_{secrets.token_hex(4)}"
    server = urlunsplit(suite._replace(path="/postgres"))
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlunsplit(suite._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def upgrade(tmp_path_factory, database_url) -> Iterator[Upgrade]:
    old = tmp_path_factory.mktemp("previous-release")
    extract_previous_release(old)
    work = tmp_path_factory.mktemp("upgrade")
    prefix = f"{settings.REDIS_PREFIX}-upgrade-{secrets.token_hex(4)}"
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},  # nothing but the cwd's code
        "AGENTFLOW_ENV": "test",
        "DATABASE_URL": database_url,
        "AGENTFLOW_DATA_DIR": str(work / "data"),
        "REDIS_URL": settings.REDIS_URL,
        "AGENTFLOW_REDIS_PREFIX": prefix,
        "DJANGO_SETTINGS_MODULE": "agentflow.settings",
    }
    manage = "manage.py"
    migrate = [PYTHON, str(HERE / "migrate.py")]
    updates = {}
    try:
        # 1. The previous release makes and fills its database.
        run([PYTHON, manage, "migrate", "--no-input", "-v0"], old, env)
        seeded = last_json(run([PYTHON, str(HERE / "seed_previous_release.py"), "seed"], old, env))
        manifest_file = work / "manifest.json"
        manifest_file.write_text(json.dumps(seeded["manifest"]))

        # 2. This code migrates it and reads it.
        updates["up"] = last_json(run(migrate, ROOT, env))["batchrun_updates"]
        check = [PYTHON, str(HERE / "check_upgraded.py")]
        upgraded = last_json(run([*check, "data", str(manifest_file)], ROOT, env))

        # 3. Back down, and the previous release reads what it gets back (README, Upgrading).
        run([*migrate, "axes", "zero"], ROOT, env)
        run([*migrate, "executor", "zero"], ROOT, env)  # no dependency on the others: by name
        run([*migrate, "flows", "zero"], ROOT, env)
        run([*migrate, "dashboard", "0002"], ROOT, env)
        run([*migrate, "fleet", "zero"], ROOT, env)
        updates["down"] = last_json(run([*migrate, "scheduler", "0001"], ROOT, env))["batchrun_updates"]
        # django-axes is not an app of the previous release: its content types and permissions go.
        run(
            [PYTHON, manage, "remove_stale_contenttypes", "--include-stale-apps", "--no-input", "-v0"],
            old,
            env,
        )
        downgraded = last_json(run([PYTHON, str(HERE / "seed_previous_release.py"), "dump"], old, env))

        # 4. Up again, and the app is used on it.
        run(migrate, ROOT, env)
        app = last_json(run([*check, "app", str(manifest_file)], ROOT, env))

        yield Upgrade(seeded["manifest"], seeded["snapshot"], upgraded, updates, downgraded["snapshot"], app)
    finally:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
        client.close()


def rows_by_id(snapshot: dict, table: str) -> dict:
    return {row["id"]: row for row in snapshot[table]}


def test_every_row_of_every_table_is_kept_with_its_values(upgrade):
    changed_on_purpose = {
        "scheduler_batchrun",
        "django_content_type",
        "django_migrations",
        "dashboard_gateway",
    }
    # Tables that gain rows on purpose (the roles' groups and permissions of scheduler 0003, the
    # new apps' permissions): every old row is still there, unchanged.
    grown = {"auth_group", "auth_permission"}
    snapshot = upgrade.upgraded["snapshot"]
    for table in TABLES:
        if table in grown:
            after = rows_by_id(snapshot, table)
            assert all(after.get(row["id"]) == row for row in upgrade.before[table]), f"{table} changed"
        elif table == "dashboard_apitoken":  # a new column, role: every old token is a viewer's
            assert [
                {k: v for k, v in row.items() if k != "role"} for row in snapshot[table]
            ] == upgrade.before[table]
            assert {row["role"] for row in snapshot[table]} == {"viewer"}
        elif table == "dashboard_alert":  # new columns with their defaults
            assert [{k: v for k, v in row.items() if k not in ALERT_COLUMNS} for row in snapshot[table]] == (
                upgrade.before[table]
            )
            assert all({k: row[k] for k in ALERT_COLUMNS} == ALERT_COLUMNS for row in snapshot[table])
        elif table == "dashboard_agentsession":  # new columns with their defaults
            assert [
                {k: v for k, v in row.items() if k not in SESSION_COLUMNS} for row in snapshot[table]
            ] == (upgrade.before[table])
            assert all({k: row[k] for k in SESSION_COLUMNS} == SESSION_COLUMNS for row in snapshot[table])
        elif table not in changed_on_purpose:
            assert snapshot[table] == upgrade.before[table], f"{table} changed"
    assert sorted(row["name"] for row in snapshot["auth_group"]) == ["admin", "operator", "viewer"]
    # Gateways: every value kept but the token, which is now stored encrypted (fleet 0002).
    without_token = [
        {k: v for k, v in row.items() if k != "token"} for row in upgrade.before["dashboard_gateway"]
    ]
    assert [
        {k: v for k, v in row.items() if k != "token"} for row in snapshot["dashboard_gateway"]
    ] == without_token
    # Sanity: the seed really wrote rows everywhere the comparison above looks.
    assert all(upgrade.before[table] for table in TABLES if table != "auth_group")


def test_batch_runs_keep_their_gateway_as_a_target(upgrade):
    before = rows_by_id(upgrade.before, "scheduler_batchrun")
    after = rows_by_id(upgrade.upgraded["snapshot"], "scheduler_batchrun")
    assert after.keys() == before.keys()
    names = {row["id"]: row["name"] for row in upgrade.before["dashboard_gateway"]}
    for pk, old in before.items():
        new = after[pk]
        assert {k: new[k] for k in LIVENESS_COLUMNS} == LIVENESS_COLUMNS
        assert new["run_id"] is None  # scheduler 0008: a run from before has no Run in the runs table
        kept = {*TARGET_COLUMNS, *LIVENESS_COLUMNS, "run_id"}
        assert {k: v for k, v in new.items() if k not in kept} == {
            k: v for k, v in old.items() if k != "gateway_id"
        }
        if old["gateway_id"] is None:
            assert (new["scope"], new["target_id"], new["target_name"]) == ("", None, "")
        else:
            assert (new["scope"], new["target_id"], new["target_name"]) == (
                "gateway",
                old["gateway_id"],
                names[old["gateway_id"]],
            )

    runs = {run["pk"]: run for run in upgrade.upgraded["runs"]}
    gateways = upgrade.manifest["gateways"]
    seeded = upgrade.manifest["runs"]
    assert runs[seeded["prod_sessions"]] | {"pk": 0} == {
        "pk": 0,
        "batch": "BATCH-001",
        "scope": "gateway",
        "target_id": gateways["prod"],
        "target_name": "prod-gateway",
        "status": "ok",
    }
    assert runs[seeded["lab_config"]]["target_name"] == "lab-gateway"
    assert runs[seeded["cleanup"]]["scope"] == ""
    assert runs[seeded["cleanup"]]["target_id"] is None


def test_batch_runs_are_rewritten_once_per_gateway_not_once_per_run(upgrade):
    gateway_runs = [row for row in upgrade.before["scheduler_batchrun"] if row["gateway_id"] is not None]
    assert len(gateway_runs) > 40  # the seed's history: far more runs than gateways
    gateways = len({row["gateway_id"] for row in gateway_runs})
    assert upgrade.batchrun_updates == {"up": gateways, "down": gateways}


def test_the_moved_models_read_the_same_tables_and_rows(upgrade):
    orm = upgrade.upgraded["orm"]
    expected = {
        "fleet.Gateway": "dashboard_gateway",
        "fleet.Agent": "dashboard_agent",
        "fleet.AgentSession": "dashboard_agentsession",
        "fleet.ConfigHistory": "config_history",
        "fleet.ChatHistory": "chat_history",
        "fleet.HealthSample": "dashboard_healthsample",
        "scheduler.Alert": "dashboard_alert",
        "dashboard.ApiToken": "dashboard_apitoken",
        "scheduler.BatchRun": "scheduler_batchrun",
    }
    assert {label: seen["db_table"] for label, seen in orm.items()} == expected
    for label, table in expected.items():
        assert orm[label]["pks"] == [row["id"] for row in upgrade.before[table]], label

    gateways = {g["name"]: g for g in upgrade.upgraded["gateways"]}
    assert gateways["prod-gateway"]["pk"] == upgrade.manifest["gateways"]["prod"]
    assert gateways["prod-gateway"]["scopes"] == ["operator.read", "operator.write"]
    assert gateways["lab-gateway"]["enabled"] is False
    agents = {a["agent_id"]: a for a in upgrade.upgraded["agents"]}
    assert agents["helper"]["parent__agent_id"] == "main"
    assert agents["solo"]["gateway__name"] == "lab-gateway"
    sessions = {s["session_key"]: s for s in upgrade.upgraded["sessions"]}
    assert sessions["agent:main:main"]["agent__name"] == "Main Agent"
    assert sessions["agent:helper:subagent:1"]["parent_id"] == sessions["agent:main:main"]["pk"]
    assert upgrade.upgraded["config"][-1]["config"]["agents"]["list"] == [{"id": "main"}, {"id": "helper"}]
    assert upgrade.upgraded["config"][-1]["changed_paths"] == ["agents.list"]
    assert [m["text"] for m in upgrade.upgraded["chat"]] == [
        "Draft the quarterly report",
        "Here is the quarterly draft",
        "Thanks",
    ]
    assert upgrade.upgraded["chat"][1]["usage"] == {"input": 100, "output": 40}
    assert {a["message"] for a in upgrade.upgraded["alerts"]} == {
        "History cleanup failed",
        "lab-gateway unreachable",
    }


def test_content_types_move_to_the_new_apps_keeping_their_ids(upgrade):
    before = {row["id"]: (row["app_label"], row["model"]) for row in upgrade.before["django_content_type"]}
    after = {
        row["id"]: (row["app_label"], row["model"])
        for row in upgrade.upgraded["snapshot"]["django_content_type"]
    }
    expected = {
        pk: (MOVED[model], model) if app == "dashboard" and model in MOVED else (app, model)
        for pk, (app, model) in before.items()
    }
    assert {pk: after[pk] for pk in before} == expected
    assert {after[pk] for pk in after.keys() - before.keys()} == NEW_CONTENT_TYPES
    labels = {tuple(ct) for ct in upgrade.upgraded["content_types"]}
    assert ("fleet", "gateway") in labels
    assert ("scheduler", "alert") in labels
    assert not {("dashboard", model) for model in MOVED} & labels  # no stale dashboard.gateway
    assert ("dashboard", "apitoken") in labels  # what stayed in the dashboard keeps its label


def test_permissions_granted_before_still_hold_under_the_new_app_labels(upgrade):
    assert upgrade.upgraded["staff_perms"] == {
        "fleet.view_gateway": True,
        "fleet.change_gateway": True,
        "scheduler.view_alert": True,
        "scheduler.change_alert": True,
        # Only what was granted: the check can fail.
        "fleet.delete_gateway": False,
        "fleet.change_agent": False,
        "dashboard.change_gateway": False,
    }
    staff = upgrade.app["staff_pages"]
    assert staff["gateway_change"]["status"] == 200
    assert "prod-gateway" in staff["gateway_change"]["body"]
    assert staff["alert_change"]["status"] == 200
    assert staff["agents_not_granted"]["status"] == 403


def test_admin_log_entries_point_at_the_renamed_content_types(upgrade):
    gateway = upgrade.manifest["gateways"]["prod"]
    alert = upgrade.manifest["open_alert"]
    assert upgrade.upgraded["log_entries"] == [
        {
            "content_type": ["fleet", "gateway"],
            "object": ["Gateway", gateway, "prod-gateway"],
            "admin_url": f"/admin/fleet/gateway/{gateway}/change/",
        },
        {
            "content_type": ["scheduler", "alert"],
            "object": ["Alert", alert, "[BATCH-004] History cleanup failed"],
            "admin_url": f"/admin/scheduler/alert/{alert}/change/",
        },
    ]
    assert upgrade.app["pages"]["log_entry_0"]["status"] == 200
    assert upgrade.app["pages"]["log_entry_1"]["status"] == 200


def test_schedules_are_intact_and_not_recreated(upgrade):
    tasks = upgrade.upgraded["periodic_tasks"]
    assert [(t["task"], json.loads(t["args"])) for t in tasks] == [
        ("scheduler.tasks.run_batch", [f"BATCH-00{n}"]) for n in range(1, 6)
    ]
    assert [t["enabled"] for t in tasks] == [True, True, False, True, True]  # the operator's pause kept
    # This release's setup_schedules recognises every one of them (same names): none doubled.
    assert upgrade.app["setup_schedules"] == [f"{t['name']}: exists" for t in tasks]


def test_gateway_tokens_are_encrypted_at_rest_and_read_back_unchanged(upgrade):
    plain = {row["id"]: row["token"] for row in upgrade.before["dashboard_gateway"]}
    stored = {row["id"]: row["token"] for row in upgrade.upgraded["snapshot"]["dashboard_gateway"]}
    assert "prod-secret-token" in plain.values()
    for pk, token in plain.items():
        if token:  # an empty token stays empty: nothing to hide
            assert stored[pk].startswith("fernet:") and token not in stored[pk]
        else:
            assert stored[pk] == ""
    assert {g["pk"]: g["token"] for g in upgrade.upgraded["gateways"]} == plain


def test_api_tokens_issued_before_still_authenticate(upgrade):
    token = upgrade.manifest["token"]
    assert upgrade.upgraded["snapshot"]["dashboard_apitoken"][0]["token_hash"] == token["hash"]
    assert upgrade.upgraded["token"]["authenticates"] is True
    api = upgrade.app["token"]["api_gateways"]
    assert api["status"] == 200, api
    assert "prod-gateway" in api["body"]


def test_the_models_need_no_further_migration(upgrade):
    assert upgrade.app["makemigrations"] == {"exit": 0, "output": "No changes detected\n"}
    applied = {(row["app"], row["name"]) for row in upgrade.upgraded["snapshot"]["django_migrations"]}
    before = {(row["app"], row["name"]) for row in upgrade.before["django_migrations"]}
    assert {m for m in applied - before if m[0] != "axes"} == NEW_MIGRATIONS
    assert ("axes", "0001_initial") in applied


@pytest.mark.parametrize(
    ("page", "names"),
    [
        # Enabled gateways only (lab-gateway is disabled); the open alert, not the resolved one.
        ("overview", ["prod-gateway", "Main Agent", "Helper Agent", "History cleanup failed"]),
        ("batches", ["BATCH-002", "lab-gateway", "AUTH_TOKEN_MISMATCH"]),
        ("config", ["prod-gateway", "agents.list"]),
        ("session", ["Quarterly report session", "Here is the quarterly draft"]),
        ("api_sessions", ["agent:main:main", "Quarterly report session"]),
        ("api_batches", ["BATCH-001", "BATCH-004"]),
        ("admin_gateways", ["prod-gateway", "lab-gateway"]),
        ("admin_alerts", ["History cleanup failed", "lab-gateway unreachable"]),
        ("admin_runs", ["prod-gateway", "lab-gateway", "AUTH_TOKEN_MISMATCH"]),
        ("admin_periodic_tasks", ["BATCH-003 Chat polling"]),
    ],
)
def test_the_app_works_on_the_upgraded_database(upgrade, page, names):
    response = upgrade.app["pages"][page]
    assert response["status"] == 200, response
    for name in names:
        assert name in response["body"], f"{name!r} not on {response['url']}"


def test_migrating_back_gives_the_previous_release_its_database_back(upgrade):
    for table in TABLES:
        assert upgrade.downgraded[table] == upgrade.before[table], f"{table} differs after migrating back"
    # Spelled out: the foreign key column is back, the columns that replaced it are gone.
    run = upgrade.downgraded["scheduler_batchrun"][0]
    assert "gateway_id" in run
    assert not set(TARGET_COLUMNS) & run.keys()


def test_upgrading_again_after_a_downgrade_gives_the_same_database(upgrade):
    first, again = upgrade.upgraded["snapshot"], upgrade.app["snapshot"]
    for table in TABLES:
        if table in GROWN_TABLES:  # the new rows are made again, with new ids; the old ones stay
            kept = {row["id"] for row in upgrade.before[table]}
            assert [r for r in again[table] if r["id"] in kept] == [
                r for r in first[table] if r["id"] in kept
            ]
            assert len(again[table]) == len(first[table]), f"{table} differs on the second upgrade"
        elif table not in ("django_migrations", "dashboard_gateway"):  # re-applied: new ids and times
            assert again[table] == first[table], f"{table} differs on the second upgrade"

    # Gateways: the same rows; the tokens encrypted again, so a fresh ciphertext (Fernet is randomised).
    def without_token(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in row.items() if k != "token"} for row in rows]

    assert without_token(again["dashboard_gateway"]) == without_token(first["dashboard_gateway"])
    assert all(row["token"].startswith("fernet:") for row in again["dashboard_gateway"] if row["token"])
    assert {(r["app"], r["name"]) for r in again["django_migrations"]} == {
        (r["app"], r["name"]) for r in first["django_migrations"]
    }
