"""``manage.py enqueue_run`` and ``manage.py queue``, and the admin's run actions."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from scheduler import queue
from scheduler.models import AuditEntry, Job, QueuePause, Run

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


@pytest.fixture(autouse=True)
def _isolated(redis_prefix):
    return redis_prefix


def run_command(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_enqueue_run_queues_a_job_or_a_kind_and_refuses_bad_input_clearly():
    Job.objects.create(name="nightly", kind="noop", priority="low")
    assert "nightly · low · queued" in run_command("enqueue_run", "--job", "nightly")
    assert "noop · urgent · queued" in run_command(
        "enqueue_run", "--kind", "noop", "--params", '{"sleep_ms": 1}', "--priority", "urgent"
    )
    assert Run.objects.count() == 2
    with pytest.raises(CommandError, match="no job named 'nope'"):
        run_command("enqueue_run", "--job", "nope")
    with pytest.raises(CommandError, match="sleep_ms must be"):
        run_command("enqueue_run", "--kind", "noop", "--params", '{"sleep_ms": "x"}')
    with pytest.raises(CommandError, match="must be JSON"):
        run_command("enqueue_run", "--kind", "noop", "--params", "{")
    # The agent kind (fleet) validates its target: with no gateway registered it says what is missing.
    with pytest.raises(CommandError, match="gateway is required"):
        run_command("enqueue_run", "--agent", "main", "--prompt", "hi")
    assert Run.objects.count() == 2


def test_queue_pause_status_resume(capsys):
    queue.enqueue(kind="noop", priority="high")
    assert "paused: priority high (1 run(s) parked)" in run_command(
        "queue", "pause", "--scope", "priority", "--value", "high", "--reason", "deploy"
    )
    status = run_command("queue", "status")
    assert "paused: priority high since" in status and ": deploy" in status
    high = next(line for line in status.splitlines() if line.startswith("high"))
    assert high.split()[4] == "1"  # the parked column
    assert "1 run(s) released" in run_command("queue", "resume", "--scope", "priority", "--value", "high")
    assert not QueuePause.objects.exists()
    with pytest.raises(CommandError, match="is not paused"):
        run_command("queue", "resume")
    assert set(AuditEntry.objects.values_list("actor_label", flat=True)) == {"command queue"}


def test_the_admin_retries_and_cancels_through_the_controls(admin_user, client):
    client.force_login(admin_user)
    failed = queue.enqueue(kind="noop")
    Run.objects.filter(pk=failed.pk).update(status="failed")
    done = queue.enqueue(kind="noop")
    Run.objects.filter(pk=done.pk).update(status="succeeded")
    page = client.post(
        "/admin/scheduler/run/",
        {"action": "retry_runs", "_selected_action": [failed.pk, done.pk]},
        follow=True,
    )
    assert page.status_code == 200
    shown = " | ".join(str(m) for m in page.context["messages"])
    assert "retry: 1 run(s)" in shown and f"run {done.pk} is succeeded" in shown
    assert Run.objects.get(pk=failed.pk).status == "queued"
    client.post("/admin/scheduler/run/", {"action": "cancel_runs", "_selected_action": [failed.pk]})
    assert Run.objects.get(pk=failed.pk).status == "cancelled"
    assert set(AuditEntry.objects.values_list("action", "source")) == {
        ("run.retry", "admin"),
        ("run.cancel", "admin"),
    }
    assert client.get(f"/admin/scheduler/run/{failed.pk}/change/").status_code == 200


def test_the_admin_job_form_validates_params_through_the_action(admin_user, client):
    client.force_login(admin_user)
    data = {
        "name": "j1",
        "kind": "noop",
        "params": '{"sleep_ms": -5}',
        "priority": "normal",
        "timeout_seconds": 60,
        "max_attempts": 3,
        "on_error": "nothing",
        "tags": "[]",
    }
    # The inlines' management forms (schedules, result actions), as the add page renders them.
    form = client.get("/admin/scheduler/job/add/").content.decode()
    for name, value in re.findall(
        r'name="([\w-]+-(?:TOTAL|INITIAL|MIN_NUM|MAX_NUM)_FORMS)"[^>]*value="(\d*)"', form
    ):
        data[name] = value
    page = client.post("/admin/scheduler/job/add/", data)
    assert page.status_code == 200 and "sleep_ms must be a whole number" in page.content.decode()
    assert not Job.objects.filter(system=False).exists()
    data["params"] = '{"sleep_ms": 5}'
    assert client.post("/admin/scheduler/job/add/", data).status_code == 302
    assert Job.objects.get(system=False).params == {"sleep_ms": 5}


def test_enqueue_run_is_audited_as_the_command_and_prints_the_run_json():
    import json

    out = run_command("enqueue_run", "--kind", "noop", "--json")
    body = json.loads(out)
    assert body["status"] == "queued" and body["kind"] == "noop" and "execution_time" in body["timings"]
    entry = AuditEntry.objects.get(action="run.enqueue")
    assert entry.actor_label == "command enqueue_run" and entry.source == "command"
    assert Run.objects.get(pk=body["id"]).trigger == "user"
    with pytest.raises(CommandError, match="--agent needs --prompt"):
        from scheduler import actions

        registered = actions.find_action("agent.prompt")
        if registered is None:
            actions.register_action(
                actions.ActionSpec("agent.prompt", "test", start=actions.NOOP_ACTION.start)
            )
        try:
            run_command("enqueue_run", "--agent", "main")
        finally:
            if registered is None:
                actions.unregister_action("agent.prompt")


def test_enqueue_run_from_file_queues_the_list_in_one_transaction_or_none(tmp_path):
    import json

    Job.objects.create(name="nightly", kind="noop")
    path = tmp_path / "runs.json"
    path.write_text(
        json.dumps(
            [
                {"job": "nightly", "priority": "high"},
                {"kind": "noop", "params": {"sleep_ms": 5}, "timeout": 20},
                {"kind": "noop", "run_after": "2999-01-01T00:00:00Z", "dedupe_key": "later"},
            ]
        )
    )
    body = json.loads(run_command("enqueue_run", "--from-file", str(path), "--json"))
    assert [(r["job"], r["priority"], r["status"]) for r in body] == [
        ("nightly", "high", "queued"),
        (None, "normal", "queued"),
        (None, "normal", "scheduled"),
    ]
    assert body[1]["timeout"] == 20 and Run.objects.count() == 3
    entry = AuditEntry.objects.get(action="run.enqueue_many")
    assert entry.actor_label == "command enqueue_run" and entry.message.startswith("3 run(s) queued")
    path.write_text(json.dumps([{"kind": "noop", "dedupe_key": "later"}]))
    assert "(existing: dedupe key 'later')" in run_command("enqueue_run", "--from-file", str(path))
    path.write_text(json.dumps([{"kind": "noop"}, {"kind": "nope"}]))
    with pytest.raises(CommandError, match="^item 1: unknown kind 'nope'"):
        run_command("enqueue_run", "--from-file", str(path))
    path.write_text('{"kind": "noop"}')
    with pytest.raises(CommandError, match="a JSON list of objects"):
        run_command("enqueue_run", "--from-file", str(path))
    assert Run.objects.count() == 3


def test_queue_status_prints_the_waits_and_throughput():
    queue.enqueue(kind="noop", priority="low")
    status = run_command("queue", "status")
    assert "oldest wait" in status and "finished/min" in status
