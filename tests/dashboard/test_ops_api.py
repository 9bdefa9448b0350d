"""The ops API (/api/v1/): queue status, pause / resume, stats, session status, runs (one or a
batch) and jobs; write endpoints need the operator role (a refusal is audited), cookie POSTs
need CSRF."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from scheduler import queue, roles
from scheduler.models import Attempt, AuditEntry, Job, QueuePause, Run
from scheduler.roles import Role
from tests.support.factories import bearer, make_agent, make_gateway

pytestmark = [pytest.mark.django_db, pytest.mark.redis, pytest.mark.usefixtures("redis_prefix")]


@pytest.fixture
def op(operator):
    return bearer(operator, "operator")


@pytest.fixture
def view(viewer):
    return bearer(viewer, "viewer")


def post(client, url, body=None, **headers):
    return client.post(url, body if body is not None else {}, content_type="application/json", **headers)


def test_post_runs_queues_a_job_run_with_201_and_the_run_shape(client, op):
    Job.objects.create(name="nightly", kind="noop", priority="low")
    response = post(client, "/api/v1/runs/", {"job": "nightly", "priority": "high", "timeout": 30}, **op)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "queued" and body["priority"] == "high" and body["job"] == "nightly"
    assert body["timeout"] == 30 and body["attempts"] == 0 and body["trigger"] == "api_token"
    assert set(body["timings"]) >= {"queued_at", "started_at", "finished_at", "execution_time", "wait_time"}
    for key in ("id", "result", "session_key", "usage", "error_class", "error"):
        assert key in body
    run = Run.objects.get(pk=body["id"])
    assert run.timeout_seconds == 30 and run.triggered_by.startswith("api token 'operator token'")
    entry = AuditEntry.objects.get(action="run.enqueue")
    assert entry.result == "ok" and entry.source == "api" and f"run {run.pk}" in entry.message
    assert client.get(f"/api/v1/runs/{run.pk}/", **op).json()["id"] == run.pk


def test_post_runs_answers_what_a_read_of_the_new_run_answers(client, op):
    """The 201 is built from the run just saved, not read back: it must say what the database
    now holds (JSON params and input as stored, the timestamps, the empty attempt list)."""
    Job.objects.create(name="nightly", kind="noop", params={"sleep_ms": 5})
    body = {"job": "nightly", "params": {"gateway": "g1", "agent": "main"}, "input": {"x": [1.5, None, "é"]}}
    created = post(client, "/api/v1/runs/", {**body, "run_after": "2030-01-02T03:04:05.123456+00:00"}, **op)
    assert created.status_code == 201, created.content
    again = client.get(f"/api/v1/runs/{created.json()['id']}/", **op)
    assert created.json() == again.json()
    assert created.json()["attempt_list"] == [] and created.json()["status"] == "scheduled"


def test_post_runs_is_seven_statements(client, op, django_assert_num_queries):
    """The token with its user, then one transaction: the job, the pauses, the run, the audit
    row (the role comes from scheduler.roles' cache after the first request)."""
    Job.objects.create(name="nightly", kind="noop")
    assert post(client, "/api/v1/runs/", {"job": "nightly"}, **op).status_code == 201
    with django_assert_num_queries(7):  # and the transaction's start and end (savepoints in a test)
        assert post(client, "/api/v1/runs/", {"job": "nightly"}, **op).status_code == 201


def test_an_operator_demoted_is_refused_at_once_though_their_token_says_operator(client, operator, op):
    Job.objects.create(name="nightly", kind="noop")
    assert post(client, "/api/v1/runs/", {"job": "nightly"}, **op).status_code == 201  # role now cached
    roles.assign(operator, Role.VIEWER)
    refused = post(client, "/api/v1/runs/", {"job": "nightly"}, **op)
    assert refused.status_code == 403 and "you are a viewer" in refused.json()["error"]
    assert Run.objects.count() == 1


def test_a_viewer_token_reads_but_cannot_write_and_the_refusal_is_audited(client, view):
    Job.objects.create(name="nightly", kind="noop")
    assert client.get("/api/v1/runs/", **view).status_code == 200
    assert client.get("/api/v1/queue/status/", **view).status_code == 200
    for url, body in [
        ("/api/v1/runs/", {"job": "nightly"}),
        ("/api/v1/queue/pause/", {"scope": "all"}),
        ("/api/v1/jobs/", {"name": "x", "kind": "noop"}),
    ]:
        response = post(client, url, body, **view)
        assert response.status_code == 403, url
        assert response.json()["code"] == "forbidden" and "operator role" in response.json()["error"]
    assert (
        Run.objects.count() == 0
        and not QueuePause.objects.exists()
        and Job.objects.filter(system=False).count() == 1
    )
    assert AuditEntry.objects.filter(result="refused").count() == 3


def test_anonymous_posts_get_401_json(client):
    response = post(client, "/api/v1/runs/", {"job": "x"})
    assert response.status_code == 401 and response.json()["code"] == "unauthenticated"


def test_a_cookie_post_needs_the_csrf_token_a_bearer_post_does_not(operator, op):
    Job.objects.create(name="nightly", kind="noop")
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(operator)
    refused = post(browser, "/api/v1/runs/", {"job": "nightly"})
    assert refused.status_code == 403 and refused.json()["code"] == "csrf"
    assert Run.objects.count() == 0
    browser.get("/")  # sets the csrftoken cookie
    token = browser.cookies["csrftoken"].value
    ok = post(browser, "/api/v1/runs/", {"job": "nightly"}, HTTP_X_CSRFTOKEN=token)
    assert ok.status_code == 201
    assert (
        post(Client(enforce_csrf_checks=True), "/api/v1/runs/", {"job": "nightly"}, **op).status_code == 201
    )


@pytest.mark.parametrize(
    ("body", "status", "code", "words"),
    [
        ({"job": "nope"}, 404, "unknown_job", "no job named 'nope'"),
        ({"job": "nightly", "priority": "asap"}, 400, "bad_priority", "urgent, high, normal, low"),
        ({"job": "nightly", "run_after": "tomorrow"}, 400, "bad_time", "ISO 8601"),
        ({"job": "nightly", "timeout": "10"}, 400, "bad_field", "'timeout'"),
        ({"job": "nightly", "colour": "red"}, 400, "bad_field", "unknown field(s) colour"),
        ({}, 400, "bad_field", 'either "job"'),
        ({"job": "nightly", "agent": "main"}, 400, "bad_field", 'either "job"'),
        ({"agent": "main"}, 400, "bad_field", "'prompt' is required"),
    ],
)
def test_post_runs_refuses_bad_input_with_json_and_queues_nothing(client, op, body, status, code, words):
    Job.objects.create(name="nightly", kind="noop")
    response = post(client, "/api/v1/runs/", body, **op)
    assert response.status_code == status, response.content
    assert response.json()["code"] == code and words in response.json()["error"]
    assert Run.objects.count() == 0


def test_bad_json_bodies_are_400_and_huge_ones_413(client, op):
    for raw in ["{", "[1, 2]", '"x"', "nul"]:
        response = client.post("/api/v1/runs/", raw, content_type="application/json", **op)
        assert response.status_code == 400 and response.json()["code"] == "bad_json", raw
    huge = client.post(
        "/api/v1/runs/", '{"job": "' + "x" * 70_000 + '"}', content_type="application/json", **op
    )
    assert huge.status_code == 413
    form = client.post("/api/v1/runs/", "job=x", content_type="application/x-www-form-urlencoded", **op)
    assert form.status_code == 415


def test_an_ad_hoc_agent_run_names_an_unknown_agent_and_queues_a_known_one(client, op):
    gateway = make_gateway("alpha")
    response = post(client, "/api/v1/runs/", {"agent": "main", "prompt": "hi"}, **op)
    assert response.status_code == 400
    assert "gateway alpha has no agent 'main'" in response.json()["error"]
    assert not Run.objects.exists()
    make_agent(gateway, "main")
    response = post(client, "/api/v1/runs/", {"agent": "main", "prompt": "hi"}, **op)
    assert response.status_code == 201, response.json()
    assert response.json()["kind"] == "agent.prompt" and response.json()["agent"] == "main"


def test_an_agent_run_needs_its_gateway_when_several_are_registered(client, op):
    make_gateway("alpha")
    make_gateway("beta")
    response = post(client, "/api/v1/runs/", {"agent": "main", "prompt": "hi"}, **op)
    assert response.status_code == 400 and "alpha, beta" in response.json()["error"]
    response = post(client, "/api/v1/runs/", {"agent": "main", "prompt": "hi", "gateway": "gamma"}, **op)
    assert response.status_code == 404 and "gamma" in response.json()["error"]


def test_a_dedupe_key_returns_the_unfinished_run_with_200(client, op):
    Job.objects.create(name="nightly", kind="noop")
    first = post(client, "/api/v1/runs/", {"job": "nightly", "dedupe_key": "k1"}, **op)
    again = post(client, "/api/v1/runs/", {"job": "nightly", "dedupe_key": "k1"}, **op)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and Run.objects.count() == 1
    assert "existing" in AuditEntry.objects.filter(action="run.enqueue").order_by("id").last().message


def test_run_after_in_the_future_schedules_and_in_the_past_queues(client, op):
    Job.objects.create(name="nightly", kind="noop")
    ahead = (timezone.now() + timedelta(hours=1)).isoformat()
    future = post(client, "/api/v1/runs/", {"job": "nightly", "run_after": ahead}, **op).json()
    assert future["status"] == "scheduled" and future["timings"]["run_after"] is not None
    past = post(client, "/api/v1/runs/", {"job": "nightly", "run_after": "2020-01-01T00:00:00Z"}, **op).json()
    assert past["status"] == "queued"


def test_runs_list_filters_and_refuses_unknown_values(client, op):
    Job.objects.create(name="nightly", kind="noop")
    queue.enqueue("nightly", priority="high")
    queue.enqueue(kind="noop", priority="low")
    rows = client.get("/api/v1/runs/?priority=high", **op).json()["results"]
    assert [r["job"] for r in rows] == ["nightly"]
    assert len(client.get("/api/v1/runs/?job=nightly&status=queued", **op).json()["results"]) == 1
    bad = client.get("/api/v1/runs/?status=done", **op)
    assert bad.status_code == 400 and "queued, scheduled" in bad.json()["error"]
    assert client.get("/api/v1/runs/?priority=asap", **op).status_code == 400
    assert client.get("/api/v1/runs/999999/", **op).status_code == 404


def test_cancel_and_retry_go_through_the_controls_with_audit_rows(client, op):
    run = queue.enqueue(kind="noop")
    cancelled = post(client, f"/api/v1/runs/{run.pk}/cancel/", {"reason": "not needed"}, **op)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = post(client, f"/api/v1/runs/{run.pk}/cancel/", **op)
    assert again.status_code == 400 and again.json()["code"] == "illegal_state"
    retried = post(client, f"/api/v1/runs/{run.pk}/retry/", **op)
    assert retried.status_code == 200 and retried.json()["status"] == "queued"
    assert post(client, f"/api/v1/runs/{run.pk}/retry/", **op).status_code == 400
    actions = list(AuditEntry.objects.order_by("id").values_list("action", "result", "reason"))
    assert actions == [
        ("run.cancel", "ok", "not needed"),
        ("run.cancel", "error", ""),
        ("run.retry", "ok", ""),
        ("run.retry", "error", ""),
    ]
    assert post(client, "/api/v1/runs/424242/cancel/", **op).status_code == 404


def test_pause_and_resume_by_scope_with_clear_errors(client, op):
    run = queue.enqueue(kind="noop", priority="high")
    paused = post(client, "/api/v1/queue/pause/", {"priority": "high", "reason": "deploy"}, **op)
    assert paused.status_code == 200 and paused.json()["parked"] == 1
    run.refresh_from_db()
    assert run.status == "parked"
    status = client.get("/api/v1/queue/status/", **op).json()
    assert status["priorities"]["high"]["counts"]["parked"] == 1
    assert status["pauses"][0]["scope"] == "priority" and status["pauses"][0]["reason"] == "deploy"
    for body, code in [
        ({"scope": "everything"}, "bad_scope"),
        ({"priority": "asap"}, "bad_priority"),
        ({"priority": "high", "job": "x"}, "bad_scope"),
        ({}, "bad_scope"),
        ({"planet": "mars"}, "bad_field"),
    ]:
        response = post(client, "/api/v1/queue/pause/", body, **op)
        assert response.status_code == 400 and response.json()["code"] == code, body
    assert post(client, "/api/v1/queue/resume/", {"job": "never-paused"}, **op).status_code == 400
    resumed = post(client, "/api/v1/queue/resume/", {"priority": "high"}, **op)
    assert resumed.json()["released"] == 1
    assert AuditEntry.objects.filter(action="queue.pause", result="ok").count() == 1


def test_jobs_create_list_detail(client, op):
    created = post(
        client,
        "/api/v1/jobs/",
        {"name": "tidy", "kind": "noop", "params": {"sleep_ms": 5}, "priority": "low", "tags": ["ops"]},
        **op,
    )
    assert created.status_code == 201, created.content
    assert created.json()["params"] == {"sleep_ms": 5} and created.json()["priority"] == "low"
    listed = client.get("/api/v1/jobs/", **op).json()["results"]
    assert [j["name"] for j in listed if not j["system"]] == ["tidy"]
    assert client.get("/api/v1/jobs/tidy/", **op).json()["kind"] == "noop"
    assert client.get("/api/v1/jobs/nope/", **op).status_code == 404
    duplicate = post(client, "/api/v1/jobs/", {"name": "tidy", "kind": "noop"}, **op)
    assert duplicate.status_code == 400 and "already exists" in duplicate.json()["error"]
    bad_params = post(
        client, "/api/v1/jobs/", {"name": "t2", "kind": "noop", "params": {"sleep_ms": "x"}}, **op
    )
    assert bad_params.status_code == 400 and "sleep_ms" in bad_params.json()["error"]
    bad_kind = post(client, "/api/v1/jobs/", {"name": "t3", "kind": "teleport"}, **op)
    assert bad_kind.status_code == 400 and "teleport" in bad_kind.json()["error"]
    assert Job.objects.filter(system=False).count() == 1
    assert AuditEntry.objects.filter(action="job.create").values_list("result", flat=True).count() == 4


def test_stats_and_session_status_answer_from_the_runs(client, op):
    now = timezone.now()
    for i, (status, error_class) in enumerate(
        [("succeeded", ""), ("failed", "server_error"), ("failed", "timeout")]
    ):
        Run.objects.create(
            kind="noop",
            job_name="nightly",
            status=status,
            error_class=error_class,
            queued_at=now - timedelta(seconds=30),
            started_at=now - timedelta(seconds=20 - i),
            finished_at=now - timedelta(seconds=10),
            usage={"input": 10, "output": 5, "totalTokens": 15, "cost": {"total": 0.01}},
        )
    usage = client.get("/api/v1/stats/usage/?minutes=5", **op).json()
    assert usage["finished"] == 3 and usage["success_rate"] == pytest.approx(1 / 3, abs=1e-3)
    assert usage["tokens"] == {"input": 30, "output": 15, "total": 45} and usage["cost"] == pytest.approx(
        0.03
    )
    assert usage["average_response_time"] == pytest.approx(9.0)
    errors = client.get("/api/v1/stats/errors/", **op).json()
    assert errors["by_class"] == {"server_error": 1, "timeout": 1}
    assert errors["by_job"] == {"nightly": {"server_error": 1, "timeout": 1}}
    perf = client.get("/api/v1/stats/performance/", **op).json()
    assert perf["wait"] == {"p50": 11.0, "p95": 12.0, "p99": 12.0, "count": 3}
    assert perf["run_time"]["p50"] == 9.0 and perf["run_time"]["p99"] == 10.0
    assert client.get("/api/v1/stats/usage/?minutes=0", **op).status_code == 400
    assert client.get("/api/v1/stats/usage/?minutes=99999", **op).status_code == 400
    session = client.get("/api/v1/session/status/", **op).json()
    assert session["entries"] == [] and session["limiter_configured"] in (True, False)


def test_health_needs_no_login(client):
    response = client.get("/api/v1/health/")
    assert response.status_code == 200 and response.json()["database"]["ok"] is True


def test_results_are_capped_with_a_link_to_the_whole(client, op):
    run = Run.objects.create(
        kind="noop", status="succeeded", result="x" * 5000, queued_at=datetime(2026, 1, 1, tzinfo=UTC)
    )
    Attempt.objects.create(run=run, number=1, status="succeeded", session_key="agent:main:af-1")
    body = client.get(f"/api/v1/runs/{run.pk}/", **op).json()
    assert len(body["result"]) == 4000 and body["result_truncated"] is True
    assert body["session_key"] == "agent:main:af-1"
    assert client.get(body["result_url"], **op).json()["result"] == "x" * 5000


# --- POST runs/ with {"runs": [...]}: many runs in one transaction (ops.submit_many) ---------------------


def test_a_batch_queues_every_run_in_order_with_201_and_one_audit_row(client, op):
    Job.objects.create(name="nightly", kind="noop", priority="low")
    gateway = make_gateway("alpha")
    make_agent(gateway, "main")
    runs = [
        {"job": "nightly"},
        {"job": "nightly", "priority": "high", "timeout": 30, "dedupe_key": "k1"},
        {"agent": "main", "prompt": "hi"},
        {"job": "nightly", "run_after": "2999-01-01T00:00:00Z"},
    ]
    response = post(client, "/api/v1/runs/", {"runs": runs}, **op)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["created"] == [True] * 4
    got = body["runs"]
    assert [r["id"] for r in got] == sorted(r["id"] for r in got)
    assert [(r["job"], r["priority"], r["status"]) for r in got] == [
        ("nightly", "low", "queued"),
        ("nightly", "high", "queued"),
        (None, "normal", "queued"),
        ("nightly", "low", "scheduled"),
    ]
    assert got[1]["timeout"] == 30 and got[1]["dedupe_key"] == "k1"
    assert got[2]["kind"] == "agent.prompt" and got[2]["agent"] == "main"
    assert {r["trigger"] for r in got} == {"api_token"}
    assert set(Run.objects.values_list("pk", flat=True)) == {r["id"] for r in got}
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.result, entry.source) == ("run.enqueue_many", "ok", "api")
    assert entry.message == f"4 run(s) queued (first {got[0]['id']}, last {got[3]['id']})"


def test_a_held_dedupe_key_answers_that_run_in_its_place_not_created(client, op):
    Job.objects.create(name="nightly", kind="noop")
    first = post(client, "/api/v1/runs/", {"job": "nightly", "dedupe_key": "k1"}, **op).json()
    response = post(
        client, "/api/v1/runs/", {"runs": [{"job": "nightly", "dedupe_key": "k1"}, {"job": "nightly"}]}, **op
    )
    assert response.status_code == 201
    body = response.json()
    assert body["runs"][0]["id"] == first["id"] and body["created"] == [False, True]
    assert Run.objects.count() == 2
    assert "1 existing (dedupe key held)" in AuditEntry.objects.order_by("id").last().message


@pytest.mark.parametrize(
    ("bad", "status", "code", "words"),
    [
        ({"job": "nope"}, 404, "unknown_job", "item 1: no job named 'nope'"),
        ({"job": "nightly", "priority": "asap"}, 400, "bad_priority", "item 1: 'priority' must be one of"),
        ({"job": "nightly", "colour": "red"}, 400, "bad_field", "item 1: unknown field(s) colour"),
        ({"agent": "main"}, 400, "bad_field", "item 1: 'prompt' is required"),
        (
            {"agent": "ghost", "prompt": "hi"},
            400,
            "invalid_params",
            "item 1: agent.prompt: gateway alpha has no agent 'ghost'",
        ),
        ([1], 400, "bad_field", "item 1: a run body must be a JSON object, not list"),
    ],
)
def test_a_bad_item_refuses_the_batch_naming_its_index_and_queues_nothing(
    client, op, bad, status, code, words
):
    Job.objects.create(name="nightly", kind="noop")
    make_gateway("alpha")
    response = post(client, "/api/v1/runs/", {"runs": [{"job": "nightly"}, bad, {"job": "nightly"}]}, **op)
    assert response.status_code == status, response.content
    assert response.json()["error"].startswith(words), response.json()
    assert response.json()["code"] == code
    assert not Run.objects.exists()


def test_too_many_runs_or_an_empty_list_or_extra_keys_are_clear_errors(client, op, settings):
    Job.objects.create(name="nightly", kind="noop")
    settings.AGENTFLOW_API_BULK_MAX = 3
    response = post(client, "/api/v1/runs/", {"runs": [{"job": "nightly"}] * 4}, **op)
    assert response.status_code == 413 and response.json()["code"] == "too_many"
    assert response.json()["error"] == "4 runs in one request: at most 3 (AGENTFLOW_API_BULK_MAX)"
    assert post(client, "/api/v1/runs/", {"runs": [{"job": "nightly"}] * 3}, **op).status_code == 201
    for body, words in [
        ({"runs": []}, "'runs' must be a non-empty list"),
        ({"runs": {"job": "nightly"}}, "'runs' must be a non-empty list"),
        ({"runs": [{"job": "nightly"}], "job": "nightly"}, "unknown field(s) job (allowed: runs)"),
    ]:
        response = post(client, "/api/v1/runs/", body, **op)
        assert response.status_code == 400 and words in response.json()["error"], body
    assert Run.objects.count() == 3


def test_a_batch_may_be_larger_than_a_single_bodys_limit_but_a_single_body_may_not(client, op, settings):
    Job.objects.create(name="nightly", kind="noop")
    items = [{"job": "nightly", "dedupe_key": f"key-{i:04d}-" + "x" * 60} for i in range(1000)]
    raw = json.dumps({"runs": items})
    assert len(raw) > 64 * 1024
    response = client.post("/api/v1/runs/", raw, content_type="application/json", **op)
    assert response.status_code == 201, response.content[:300]
    assert len(response.json()["runs"]) == 1000 and Run.objects.count() == 1000
    single = json.dumps({"job": "nightly", "input": "x" * 70_000})
    response = client.post("/api/v1/runs/", single, content_type="application/json", **op)
    assert response.status_code == 413 and response.json()["code"] == "too_large"


def test_a_viewer_token_is_refused_and_the_refusal_audited(client, view):
    Job.objects.create(name="nightly", kind="noop")
    response = post(client, "/api/v1/runs/", {"runs": [{"job": "nightly"}, {"job": "nightly"}]}, **view)
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden" and "operator role" in response.json()["error"]
    assert not Run.objects.exists()
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.result) == ("run.enqueue_many", "refused")
