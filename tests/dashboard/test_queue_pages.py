"""The Queue, Runs and Jobs pages: figures from real rows and real Redis, filters checked,
every button a POST through scheduler.controls (role check, audit row), viewers refused."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from dashboard import queue_page
from scheduler import alerts, breakers, limits, queue, stops
from scheduler.models import Attempt, AuditEntry, Job, QueuePause, Run
from tests.support.html import dom

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def web(client, operator, redis_prefix):
    client.force_login(operator)
    return client


@pytest.fixture
def as_viewer(client, viewer, redis_prefix):
    client.force_login(viewer)
    return client


def make_job(name: str = "nightly", **fields) -> Job:
    return Job.objects.create(name=name, kind="noop", params={}, **fields)


def make_run(job: Job | None = None, **fields) -> Run:
    defaults = {"kind": "noop", "job": job, "job_name": job.name if job else ""}
    return Run.objects.create(**{**defaults, **fields})


def finished_runs(n: int, minutes_ago: float = 2, priority: str = "normal", wait_s: float = 3) -> None:
    now = timezone.now()
    done = now - timedelta(minutes=minutes_ago)
    Run.objects.bulk_create(
        Run(
            kind="noop",
            priority=priority,
            status="succeeded",
            queued_at=done - timedelta(seconds=wait_s + 1),
            started_at=done - timedelta(seconds=1),
            finished_at=done,
        )
        for _ in range(n)
    )


# --- queue page ------------------------------------------------------------------------------------


def test_the_queue_page_without_runs_says_so(web):
    page = dom(web.get("/queue/"))
    assert "Nothing is running." in page.text
    assert "No run finished in the last hour." in page.text
    assert "Nothing is paused." in page.text
    assert page.find("table", id="queue-sizes") is not None


def test_the_queue_page_counts_each_priority_and_state(web):
    for _ in range(3):
        make_run(priority="high")
    make_run(priority="low", status="parked")
    make_run(priority="high", status="running", started_at=timezone.now() - timedelta(minutes=4))
    finished_runs(7, priority="normal")
    page = dom(web.get("/queue/"))
    high = page.find("tr", id="sizes-high")
    cells = {td.attrs["data-state"]: td.text.strip() for td in high.find_all("td")}
    assert cells["queued"] == "3" and cells["running"] == "1" and cells["failed"] == "0"
    low = {td.attrs["data-state"]: td.text.strip() for td in page.find("tr", id="sizes-low").find_all("td")}
    assert low["parked"] == "1"
    assert "7 runs finished in the last hour." in page.text
    running = page.find("table", id="running-runs").text
    assert "4\xa0minutes" in running
    assert page.find("svg", **{"class": "sparkline"}) is not None


def test_the_throughput_series_counts_runs_per_minute():
    finished_runs(5, minutes_ago=3)
    finished_runs(2, minutes_ago=30, wait_s=60)
    rows, _ = queue_page._counts(timezone.now())
    throughput, waits = queue_page._flow(timezone.now(), rows)
    assert len(throughput) == 60 and sum(v for _, v in throughput) == 7
    assert sorted(round(v) for _, v in waits) == [3, 60]
    normal = next(r for r in rows if r.priority == "normal")
    assert normal.served == 5  # the last 10 minutes only


def test_the_queue_prediction_says_when_the_backlog_passes_the_threshold(settings):
    row = queue_page.PriorityRow("normal", "Normal", {"queued": 400}, arrived=500, served=200)
    (prediction,) = queue_page.queue_predictions([row], threshold=1000)
    # 50 arriving, 20 served a minute: 600 more runs at 30 a minute is 20 minutes
    assert prediction.sentence.startswith(
        "At this rate the normal queue passes 1,000 runs in about 20 minutes"
    )
    assert prediction.level == "warning"
    keeping_up = queue_page.PriorityRow("high", "High", {"queued": 4}, arrived=10, served=40)
    assert "keeps up" in queue_page.queue_predictions([keeping_up], threshold=1000)[0].sentence


def test_the_slope_is_a_least_squares_fit_per_minute():
    points = [(0.0, 100.0), (60.0, 110.0), (120.0, 120.0), (180.0, 130.0)]
    assert queue_page.slope_per_minute(points) == pytest.approx(10.0)
    assert queue_page.slope_per_minute(points[:2]) is None


def test_rate_limits_and_breakers_come_from_the_shared_limiter(web, settings):
    limits.set_budget("provider:openai", "60rpm")
    limits.acquire(["provider:openai"])
    for _ in range(settings.AGENTFLOW_BREAKER_FAILURES):
        breakers.record_failure("7", "openai")
    page = dom(web.get("/queue/"))
    assert "provider:openai" in page.find("ul", id="rate-limits").text
    breaker = page.find("ul", id="breakers")
    assert "openai" in breaker.text and "Open" in breaker.text
    assert any("provider:openai: 1 of 60 requests a minute" in li.text for li in page.find_all("li"))


def test_blocked_providers_are_listed_with_their_reason(web):
    make_run(status="blocked", gateway="3", agent="main", provider="anthropic", error="401 key expired")
    make_run(status="blocked", gateway="3", agent="main", provider="anthropic", error="401 key expired")
    blocked = dom(web.get("/queue/")).find("ul", id="blocked").text
    assert "anthropic" in blocked and "2 runs" in blocked and "401 key expired" in blocked


def test_the_system_figures_name_this_process_and_the_stores():
    page = queue_page.build()
    assert any(p.this and p.rss_mb > 0 for p in page.system.processes)
    assert page.system.redis_ok and page.system.database_ok


def test_the_fragment_is_the_live_part_only(web):
    response = web.get("/fragments/queue/")
    assert response.status_code == 200
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="queue-live"') and "<html" not in body


def test_the_queue_page_keeps_to_ten_queries_with_hundreds_of_runs(web, django_assert_max_num_queries):
    job = make_job()
    Run.objects.bulk_create(
        Run(kind="noop", job=job, priority=p, status=s)
        for p in ("urgent", "high", "normal", "low")
        for s in ("queued", "running", "blocked", "parked")
        for _ in range(20)
    )
    finished_runs(300)
    QueuePause.objects.create(scope="job", value="other", who="t")
    stops.sync_mirror()  # as the tick keeps it: the stop banner reads it, not the database
    alerts.open_snapshot(3, 99)  # the alert banners' snapshot, as the previous page load left it
    with django_assert_max_num_queries(10):
        assert web.get("/queue/").status_code == 200


def test_pause_and_resume_from_the_page_park_release_and_audit(web):
    run = queue.enqueue(make_job(), priority="low")
    response = web.post("/queue/pause", {"scope": "priority", "value": "low"})
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.status == "parked"
    assert AuditEntry.objects.filter(action="queue.pause", result="ok", actor_label="operator").exists()
    page = dom(web.get("/queue/"))
    assert page.find("li", id="pause-priority-low") is not None
    assert not page.find_all("button", id="pause-low")  # already paused: no second button
    web.post("/queue/resume", {"scope": "priority", "value": "low"})
    run.refresh_from_db()
    assert run.status == "queued" and not QueuePause.objects.exists()
    assert AuditEntry.objects.filter(action="queue.resume", result="ok").exists()


def test_a_bad_scope_is_a_message_not_an_error(web):
    response = web.post("/queue/pause", {"scope": "planet", "value": "mars"}, follow=True)
    assert response.status_code == 200
    assert "unknown scope" in response.content.decode()
    assert not QueuePause.objects.exists()
    response = web.post("/queue/resume", {"scope": "all"}, follow=True)
    assert "is not paused" in response.content.decode()


def test_a_viewer_cannot_pause_and_sees_the_buttons_disabled(as_viewer):
    button = dom(as_viewer.get("/queue/")).find("button", id="pause-all")
    assert "disabled" in button.attrs
    assert as_viewer.post("/queue/pause", {"scope": "all"}).status_code == 403
    assert not QueuePause.objects.exists()
    assert AuditEntry.objects.filter(action="queue.pause", result="refused").exists()


def test_a_blocked_provider_is_unblocked_from_the_page_in_order_and_audited(web):
    first = make_run(status="blocked", gateway="3", agent="main", provider="anthropic", kind="agent.prompt")
    second = make_run(status="blocked", gateway="3", agent="main", provider="anthropic", kind="agent.prompt")
    other = make_run(status="blocked", gateway="3", agent="helper", provider="anthropic", kind="agent.prompt")
    page = dom(web.get("/queue/"))
    assert page.find("button", id="unblock-1") is not None
    response = web.post(
        "/queue/unblock", {"gateway": "3", "agent": "main", "provider": "anthropic"}, follow=True
    )
    assert response.status_code == 200 and "2 runs queued again" in response.content.decode()
    statuses = dict(Run.objects.values_list("pk", "status"))
    assert statuses[first.pk] == statuses[second.pk] == "queued" and statuses[other.pk] == "blocked"
    entry = AuditEntry.objects.get(action="provider.unblock")
    assert entry.result == "ok" and entry.actor_label == "operator" and "2 run(s) requeued" in entry.message
    response = web.post("/queue/unblock", {"gateway": "3", "agent": "", "provider": "anthropic"}, follow=True)
    assert "say which gateway, agent and provider" in response.content.decode()


def test_a_viewer_cannot_unblock_a_provider(as_viewer):
    run = make_run(status="blocked", gateway="3", agent="main", provider="anthropic", kind="agent.prompt")
    assert "disabled" in dom(as_viewer.get("/queue/")).find("button", id="unblock-1").attrs
    response = as_viewer.post("/queue/unblock", {"gateway": "3", "agent": "main", "provider": "anthropic"})
    assert response.status_code == 403
    run.refresh_from_db()
    assert run.status == "blocked"
    assert AuditEntry.objects.filter(action="provider.unblock", result="refused").exists()


def test_the_pages_need_a_login(client):
    for url in ("/queue/", "/runs/", "/jobs/", "/fragments/queue/"):
        assert client.get(url).status_code == 302


# --- runs ------------------------------------------------------------------------------------------


def test_the_runs_list_filters_by_status_priority_job_and_kind(web):
    job = make_job()
    make_run(job, status="failed", priority="high")
    make_run(job, status="succeeded")
    make_run(None, status="failed")
    rows = dom(web.get("/runs/", {"status": "failed", "job": "nightly"})).find("table", id="runs-list")
    assert len(rows.find("tbody").find_all("tr")) == 1
    assert len(dom(web.get("/runs/", {"priority": "high"})).find("tbody").find_all("tr")) == 1
    assert len(dom(web.get("/runs/", {"kind": "noop"})).find("tbody").find_all("tr")) == 3
    assert "No run matches the filters." in dom(web.get("/runs/", {"status": "lost"})).text


def test_each_run_in_the_list_links_to_its_page_and_its_trace(web):
    run = make_run(make_job(), status="succeeded")
    cell = dom(web.get("/runs/")).find("tr", id=f"run-{run.pk}").find("td")
    hrefs = [a.attrs["href"] for a in cell.find_all("a")]
    assert hrefs == [f"/runs/{run.pk}/", f"/runs/{run.pk}/trace/"]


@pytest.mark.parametrize(
    ("name", "value"), [("status", "exploded"), ("priority", "asap"), ("kind", "rm -rf")]
)
def test_a_filter_the_page_does_not_know_is_a_400_naming_it(web, name, value):
    response = web.get("/runs/", {name: value})
    assert response.status_code == 400
    assert f"'{name}'" in dom(response).text


def test_successful_batch_runs_are_hidden_unless_asked_for(web):
    make_run(None, kind="batch", job_name="BATCH-003", status="succeeded")
    make_run(None, kind="batch", job_name="BATCH-003", status="failed")
    mine = make_run(None, status="succeeded")

    def listed(**query) -> list[str]:
        page = dom(web.get("/runs/", query))
        return [tr.attrs["id"] for tr in page.find("tbody").find_all("tr") if "id" in tr.attrs]

    default = dom(web.get("/runs/"))
    assert "Successful batch runs are hidden" in default.find(id="runs-batches-note").text
    assert len(listed()) == 2 and f"run-{mine.pk}" in listed()  # the failed batch run stays
    assert len(listed(batches="all")) == 3
    assert len(listed(kind="batch")) == 2
    assert len(listed(status="succeeded")) == 2


def test_the_runs_list_empty(web):
    assert "No run yet." in dom(web.get("/runs/")).text


def test_the_run_page_shows_attempts_errors_usage_and_the_session(web):
    run = make_run(
        make_job(), status="failed", gateway="5", agent="main", error_class="server_error", error="HTTP 500",
        usage={"input_tokens": 12}, attempts=1, result="x" * 5000,
        started_at=timezone.now() - timedelta(seconds=30), finished_at=timezone.now(),
    )  # fmt: skip
    attempt = Attempt.objects.create(
        run=run, number=1, status="failed", error_class="server_error", error="HTTP 500 from provider",
        session_key="agent:main:run-1", worker="host:1", finished_at=timezone.now(),
    )  # fmt: skip
    page = dom(web.get(f"/runs/{run.pk}/"))
    attempts = page.find("table", id="attempts").text
    assert str(attempt.pk) in attempts and "server_error" in attempts and "host:1" in attempts
    assert page.find("a", id="run-session").attrs["href"] == "/gateways/5/sessions/agent:main:run-1/"
    assert "input_tokens: 12" in page.text
    assert len(page.find("pre", id="run-result").text) == 4000
    assert web.get(f"/runs/{run.pk}/result").content.decode() == "x" * 5000
    assert web.get("/runs/999999/").status_code == 404


def test_cancel_and_retry_from_the_run_page_are_audited(web):
    run = queue.enqueue(make_job())
    assert web.post(f"/runs/{run.pk}/cancel").status_code == 302
    run.refresh_from_db()
    assert run.status == "cancelled"
    assert "disabled" in dom(web.get(f"/runs/{run.pk}/")).find("button", id="run-cancel").attrs
    web.post(f"/runs/{run.pk}/retry")
    run.refresh_from_db()
    assert run.status == "queued"
    assert set(AuditEntry.objects.values_list("action", flat=True)) >= {"run.cancel", "run.retry"}
    response = web.post(f"/runs/{run.pk}/retry", follow=True)  # a queued run cannot be retried
    assert "only failed, aborted, lost or cancelled runs can be retried" in response.content.decode()


def test_a_viewer_cannot_cancel_a_run(as_viewer):
    run = queue.enqueue(make_job())
    button = dom(as_viewer.get(f"/runs/{run.pk}/")).find("button", id="run-cancel")
    assert button.attrs.get("title") == "Needs the operator role."
    assert as_viewer.post(f"/runs/{run.pk}/cancel").status_code == 403
    run.refresh_from_db()
    assert run.status == "queued"


# --- jobs ------------------------------------------------------------------------------------------


def test_the_jobs_list_and_its_empty_state(web):
    assert "No job is defined yet." in dom(web.get("/jobs/")).text
    job = make_job(tags=["nightly", "ops"])
    make_run(job, status="succeeded")
    row = dom(web.get("/jobs/")).find("tr", id=f"job-{job.pk}")
    assert "nightly" in row.text and "ops" in row.text and "noop" in row.text


def test_run_now_queues_a_user_run_and_audits_it(web):
    job = make_job(priority="high", timeout_seconds=90)
    page = dom(web.get(f"/jobs/{job.pk}/"))
    assert "1 min 30 s" in page.find("section", id="job-definition").text
    assert "This job has not run yet." in page.text
    assert web.post(f"/jobs/{job.pk}/run").status_code == 302
    run = Run.objects.get(job=job)
    assert run.trigger == "user" and run.triggered_by == "operator" and run.priority == "high"
    entry = AuditEntry.objects.get(action="job.run_now")
    assert entry.result == "ok" and entry.target_label == job.name
    assert dom(web.get(f"/jobs/{job.pk}/")).find("tr", id=f"run-{run.pk}") is not None


def test_run_now_of_a_disabled_job_is_refused_with_a_message(web):
    job = make_job(enabled=False)
    response = web.post(f"/jobs/{job.pk}/run", follow=True)
    assert "is disabled" in response.content.decode()
    assert not Run.objects.exists()


def test_a_viewer_cannot_run_a_job(as_viewer):
    job = make_job()
    assert as_viewer.post(f"/jobs/{job.pk}/run").status_code == 403
    assert not Run.objects.exists()
    assert AuditEntry.objects.filter(action="job.run_now", result="refused").exists()
