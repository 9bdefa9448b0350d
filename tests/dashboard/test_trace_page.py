"""The trace waterfall (``/runs/<id>/trace/``, ``GET /api/v1/runs/<id>/trace/``) and the Flows
pages: a flow run's spans as a tree on a time axis (an error step, an agent child with tokens,
cost and its session), a plain agent run synthesized from its queue wait and attempts, a flow
still running, 404s, the login, the JSON."""

from __future__ import annotations

from datetime import timedelta

import jsonschema
import pytest
from django.utils import timezone

from dashboard import api_flows, trace
from flows.models import Flow
from tests.support.factories import (
    bearer,
    make_attempt,
    make_flow_run,
    make_gateway,
    make_retried_agent_run,
    make_run,
    make_span,
)
from tests.support.html import dom

pytestmark = [pytest.mark.usefixtures("redis_prefix"), pytest.mark.django_db, pytest.mark.redis]

SOURCE = """name: coding
description: Fix a bug, test it.
steps:
  - id: inspect
    type: set
    with: {values: {a: 1}}
  - id: draft
    type: agent
    with: {prompt: "fix it"}
  - id: test
    type: set
    with: {values: {b: 2}}
"""


@pytest.fixture
def web(client, viewer):
    client.force_login(viewer)  # a read page: the viewer role is enough
    return client


def ns(moment) -> int:
    return int(moment.timestamp() * 1e9)


@pytest.fixture
def flow_trace(db):
    """A finished flow run of three steps: inspect, draft (an agent run on gateway alpha with
    tokens, cost and a session), test (failed, the flow went on)."""
    gateway = make_gateway("alpha")
    t0 = timezone.now() - timedelta(minutes=5)
    run = make_run(
        "flow",
        job_name="coding",
        status="succeeded",
        queued_at=t0,
        started_at=t0,
        finished_at=t0 + timedelta(seconds=1),
    )
    fr = make_flow_run(
        run,
        "coding",
        source=SOURCE,
        status="succeeded",
        position="end",
        steps_done=3,
        started_at=t0,
        started_ns=ns(t0),
        finished_at=t0 + timedelta(seconds=1),
    )
    agent = make_run(
        "agent.prompt",
        status="succeeded",
        gateway=str(gateway.pk),
        agent="main",
        params={"gateway": str(gateway.pk), "agent": "main"},
        usage={"input_tokens": 1200, "output_tokens": 345, "cost": 0.0123, "model": "stub/stub-model"},
        triggered_by=f"flow run {run.pk} step draft",
    )
    make_attempt(agent, 1, status="succeeded", session_key="agent:main:flow-draft")
    # Made out of start order: the page orders them by time under their parents.
    test = make_span(fr, "step test", 700, 950, status="error", status_message="pytest exited 1: 2 failed")
    root = make_span(
        fr, "flow coding", 0, 1000, span_id=fr.root_span_id, parent_span_id="", kind="flow", status="ok"
    )
    inspect = make_span(fr, "step inspect", 0, 100, attributes={"flow.step.type": "set"})
    draft = make_span(fr, "step draft", 100, 700, attributes={"flow.step.type": "agent"})
    child = make_span(
        fr,
        "agent main",
        120,
        690,
        parent_span_id=draft.span_id,
        kind="agent",
        child_run=agent,
        attributes={
            "gen_ai.agent.name": "main",
            "gen_ai.request.model": "stub/stub-model",
            "gen_ai.usage.input_tokens": 1200,
            "gen_ai.usage.output_tokens": 345,
            "agentflow.cost": 0.0123,
            "agentflow.session_key": "agent:main:flow-draft",
        },
    )
    return {
        "gateway": gateway,
        "run": run,
        "flow_run": fr,
        "agent": agent,
        "spans": [root, inspect, draft, child, test],
    }


def rows_of(page):
    return page.find("table", id="waterfall").find("tbody").find_all("tr")


# --- the flow run's waterfall ------------------------------------------------------------------------


def test_a_flow_runs_spans_are_a_tree_in_time_order_with_bars_placed_on_the_axis(web, flow_trace):
    response = web.get(f"/runs/{flow_trace['run'].pk}/trace/")
    assert response.status_code == 200
    page = dom(response)
    rows = rows_of(page)
    assert [r.attrs["id"] for r in rows] == [f"span-{s.span_id}" for s in flow_trace["spans"]]
    assert [r.find("span", cls="wf-title").text for r in rows] == [
        "flow coding", "step inspect", "step draft", "agent main", "step test",
    ]  # fmt: skip
    depths = [next(c for c in r.attrs["class"].split() if c.startswith("wf-depth-")) for r in rows]
    assert depths == ["wf-depth-0", "wf-depth-1", "wf-depth-1", "wf-depth-2", "wf-depth-1"]
    assert all(r.attrs["tabindex"] == "0" for r in rows)  # each row is reachable from the keyboard
    # The bars: percentages of the 1 s trace.
    bars = [r.find("rect", cls="wf-bar") for r in rows]
    assert [(b.attrs["x"], b.attrs["width"]) for b in bars] == [
        ("0.0%", "100.0%"), ("0.0%", "10.0%"), ("10.0%", "60.0%"), ("12.0%", "57.0%"), ("70.0%", "25.0%"),
    ]  # fmt: skip
    assert "wf-fill-error" in bars[4].attrs["class"] and "wf-fill-ok" in bars[2].attrs["class"]
    # Durations and offsets as text, for everyone (the bars are hidden from screen readers).
    draft = rows[2]
    assert draft.find("td", data_label="Start").text.strip() == "+100 ms"
    assert draft.find("td", data_label="Duration").text.strip() == "600 ms"
    assert bars[2].parent.attrs["aria-hidden"] == "true"
    axis = page.find("th", cls="wf-timeline-col").find("svg", cls="wf-axis")
    assert [t.text for t in axis.find_all("text")] == ["0 ms", "200 ms", "400 ms", "600 ms", "800 ms", "1 s"]


def test_an_agent_step_shows_its_tokens_cost_model_and_links_to_its_run_and_session(web, flow_trace):
    page = dom(web.get(f"/runs/{flow_trace['run'].pk}/trace/"))
    agent_row = rows_of(page)[3]
    agent, gateway = flow_trace["agent"], flow_trace["gateway"]
    assert agent_row.attrs["data-kind"] == "agent"
    assert " ".join(agent_row.find("td", data_label="Tokens").text.split()) == "1200 · 345"
    assert agent_row.find("td", data_label="Cost").text.strip() == "$0.0123"
    assert agent_row.find("span", cls="chip").text == "stub/stub-model"
    links = {a.text: a.attrs["href"] for a in agent_row.find_all("a")}
    assert links == {
        f"run #{agent.pk}": f"/runs/{agent.pk}/",
        "its trace": f"/runs/{agent.pk}/trace/",
        "session": f"/gateways/{gateway.pk}/sessions/agent:main:flow-draft/",
    }
    facts = page.find("section", id="trace-facts")
    assert facts.find("dd", id="trace-tokens").text.strip() == "1.2k · 345"
    assert facts.find("dd", id="trace-cost").text.strip() == "$0.0123"
    assert facts.find("dd", id="trace-duration").text.strip() == "1 s"


def test_an_error_step_shows_its_status_and_message(web, flow_trace):
    page = dom(web.get(f"/runs/{flow_trace['run'].pk}/trace/"))
    test_row = rows_of(page)[4]
    assert test_row.attrs["data-status"] == "error"
    assert test_row.find("span", cls="status").attrs["data-status"] == "error"
    assert test_row.find("span", cls="status").text.strip() == "Error"
    assert test_row.find("span", cls="wf-message").text.strip() == "pytest exited 1: 2 failed"
    assert page.find("span", id="trace-errors").text == "1 error"


def test_the_agent_runs_own_trace_links_back_to_the_flows(web, flow_trace):
    page = dom(web.get(f"/runs/{flow_trace['agent'].pk}/trace/"))
    assert page.find("a", id="parent-trace").attrs["href"] == f"/runs/{flow_trace['run'].pk}/trace/"


def test_a_flow_still_running_has_an_open_root_and_its_current_step_up_to_now(web, db):
    t0 = timezone.now() - timedelta(seconds=4)
    run = make_run("flow", status="running", queued_at=t0, started_at=t0)
    waiting = make_run("agent.prompt", status="running", params={"agent": "main"})
    fr = make_flow_run(
        run,
        "support",
        status="waiting",
        position="answer",
        step_attempt=2,
        started_ns=ns(t0),
        started_at=t0,
        step_span_id="ab" * 8,
        step_started_ns=ns(t0) + 3_000_000_000,
        waiting_run=waiting,
    )
    make_span(fr, "step greet", 0, 2000)
    built = trace.for_run(run)
    assert [(r.name, r.depth, r.status, r.open_ended) for r in built.rows] == [
        ("flow support", 0, "running", True),
        ("step greet", 1, "ok", False),
        ("step answer", 1, "running", True),
    ]
    assert built.rows[2].child_run_id == waiting.pk
    assert 3900 < built.duration_ms < 60_000  # up to now
    page = dom(web.get(f"/runs/{run.pk}/trace/"))
    assert "so far" in page.find("dd", id="trace-duration").text
    current = rows_of(page)[2]
    assert current.find("a").attrs["href"] == f"/runs/{waiting.pk}/"


def test_spans_whose_parent_is_missing_hang_under_the_root(db):
    run = make_run("flow", status="succeeded")
    fr = make_flow_run(run, status="succeeded", started_ns=10**18, finished_at=timezone.now())
    make_span(fr, "flow demo", 0, 10, span_id=fr.root_span_id, parent_span_id="", kind="flow")
    make_span(fr, "orphan", 2, 3, parent_span_id="f" * 16)
    assert [(r.name, r.depth) for r in trace.for_run(run).rows] == [("flow demo", 0), ("orphan", 1)]


# --- a plain agent run -----------------------------------------------------------------------------


@pytest.fixture
def agent_run(db):
    gateway = make_gateway("beta")
    t0 = timezone.now() - timedelta(minutes=2)
    run = make_retried_agent_run(
        gateway="beta",  # by name: the page finds the gateway's id
        t0=t0,
        first=(2, 5),
        second=(6, 10),
        error="no reply within 3 s",
        usage={"input_tokens": 800, "output_tokens": 120, "cost": 0.004},
        job_name="nightly-report",
    )
    return {"run": run, "gateway": gateway}


def test_a_plain_agent_run_is_drawn_from_its_queue_wait_and_attempts(web, agent_run):
    run, gateway = agent_run["run"], agent_run["gateway"]
    page = dom(web.get(f"/runs/{run.pk}/trace/"))
    rows = rows_of(page)
    titles = [r.find("span", cls="wf-title").text for r in rows]
    assert titles == ["nightly-report", "queued", "attempt 1", "wait before attempt 2", "attempt 2"]
    bars = [(r.find("rect").attrs["x"], r.find("rect").attrs["width"]) for r in rows]
    assert bars == [
        ("0.0%", "100.0%"),
        ("0.0%", "20.0%"),
        ("20.0%", "30.0%"),
        ("50.0%", "10.0%"),
        ("60.0%", "40.0%"),
    ]
    first, second = rows[2], rows[4]
    assert first.attrs["data-status"] == "error"
    assert " ".join(first.find("span", cls="wf-message").text.split()) == "timeout: no reply within 3 s"
    assert (
        first.find("td", data_label="Tokens").text.strip() == ""
    )  # the usage is the run's: on its last attempt
    assert " ".join(second.find("td", data_label="Tokens").text.split()) == "800 · 120"
    assert second.find("td", data_label="Cost").text.strip() == "$0.0040"
    assert (
        first.find("a", cls="wf-session").attrs["href"]
        == f"/gateways/{gateway.pk}/sessions/agent:main:run-1/"
    )
    assert (
        second.find("a", cls="wf-session").attrs["href"]
        == f"/gateways/{gateway.pk}/sessions/agent:main:run-2/"
    )
    assert rows[1].find("td", data_label="Duration").text.strip() == "2 s"


def test_a_queued_run_is_one_open_wait(db):
    run = make_run("noop", queued_at=timezone.now() - timedelta(seconds=3))
    built = trace.for_run(run)
    assert [(r.name, r.kind, r.status, r.open_ended) for r in built.rows] == [
        ("noop", "run", "waiting", True),
        ("queued", "wait", "waiting", True),
    ]


def test_the_run_page_links_to_its_trace(web, agent_run):
    run = agent_run["run"]
    page = dom(web.get(f"/runs/{run.pk}/"))
    assert page.find("a", id="run-trace").attrs["href"] == f"/runs/{run.pk}/trace/"


# --- errors and access ---------------------------------------------------------------------------


def test_an_unknown_run_is_a_404_on_the_page_and_in_the_api(web, db):
    assert web.get("/runs/987654/trace/").status_code == 404
    response = web.get("/api/v1/runs/987654/trace/")
    assert response.status_code == 404
    assert response.json() == {"error": "no run 987654", "code": "not_found"}
    assert web.get("/runs/99999999999999999999/trace/").status_code == 404  # past a bigint


def test_the_trace_needs_a_login(client, agent_run):
    run = agent_run["run"]
    response = client.get(f"/runs/{run.pk}/trace/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    response = client.get(f"/api/v1/runs/{run.pk}/trace/")
    assert response.status_code == 401 and "authentication required" in response.json()["error"]
    assert client.get("/flows/").status_code == 302


# --- the API ---------------------------------------------------------------------------------------


def test_the_api_answers_the_rows_the_page_draws(client, viewer, flow_trace):
    response = client.get(f"/api/v1/runs/{flow_trace['run'].pk}/trace/", **bearer(viewer, "viewer"))
    assert response.status_code == 200
    body = response.json()
    assert body["source"] == "spans" and body["trace_id"] == flow_trace["flow_run"].trace_id
    assert body["flow"] == {"name": "coding", "status": "succeeded", "position": "end", "steps_done": 3}
    assert body["duration_ms"] == 1000.0
    assert body["totals"] == {"tokens_in": 1200, "tokens_out": 345, "cost": 0.0123, "errors": 1}
    rows = body["rows"]
    assert [(r["name"], r["depth"], r["status"]) for r in rows] == [
        ("flow coding", 0, "ok"), ("step inspect", 1, "ok"), ("step draft", 1, "ok"),
        ("agent main", 2, "ok"), ("step test", 1, "error"),
    ]  # fmt: skip
    agent = rows[3]
    assert (agent["offset_ms"], agent["duration_ms"], agent["left_pct"], agent["width_pct"]) == (
        120,
        570,
        12,
        57,
    )
    assert (agent["tokens_in"], agent["tokens_out"], agent["cost"]) == (1200, 345, 0.0123)
    assert agent["child_run_id"] == flow_trace["agent"].pk
    assert agent["session_url"] == f"/gateways/{flow_trace['gateway'].pk}/sessions/agent:main:flow-draft/"
    assert rows[4]["error"] == "pytest exited 1: 2 failed"


def test_the_api_answers_what_its_schema_declares(client, viewer, flow_trace, agent_run):
    headers = bearer(viewer, "viewer")
    for run in (flow_trace["run"], flow_trace["agent"], agent_run["run"]):
        body = client.get(f"/api/v1/runs/{run.pk}/trace/", **headers).json()
        jsonschema.validate(body, api_flows.TRACE)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**body, "source": "guess"}, api_flows.TRACE)


def test_the_api_synthesizes_a_plain_run(client, viewer, agent_run):
    body = client.get(f"/api/v1/runs/{agent_run['run'].pk}/trace/", **bearer(viewer, "viewer")).json()
    assert body["source"] == "run" and body["flow"] is None and body["trace_id"] == ""
    assert [(r["kind"], r["status"], r["error_class"]) for r in body["rows"]] == [
        ("run", "ok", ""), ("wait", "ok", ""), ("attempt", "error", "timeout"), ("wait", "ok", ""),
        ("attempt", "ok", ""),
    ]  # fmt: skip
    assert body["totals"]["tokens_in"] == 800 and body["duration_ms"] == 10_000.0


# --- the axis --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "total_ms, labels",
    [
        (1000, ["0 ms", "200 ms", "400 ms", "600 ms", "800 ms", "1 s"]),
        (10_000, ["0 ms", "2 s", "4 s", "6 s", "8 s", "10 s"]),
        (1300, ["0 ms", "500 ms", "1 s"]),
        (0.4, ["0 ms", "0.1 ms", "0.2 ms", "0.3 ms", "0.4 ms"]),
        (150_000, ["0 ms", "30 s", "1 min", "1 min 30 s", "2 min", "2 min 30 s"]),
        (7_200_000, ["0 ms", "30 min", "1 h", "1 h 30 min", "2 h"]),
        (0, ["0 ms"]),
    ],
)
def test_the_axis_ticks_are_round_numbers(total_ms, labels):
    ticks = trace.ticks(total_ms)
    assert [t.label for t in ticks] == labels
    assert ticks[0].pct == 0 and all(0 <= t.pct <= 100 for t in ticks)


# --- the Flows pages -------------------------------------------------------------------------------


def test_the_flows_page_lists_stored_flows_and_recent_runs_with_their_step_and_trace(web, flow_trace):
    Flow.objects.create(name="coding", description="Fix a bug, test it.", source=SOURCE)
    Flow.objects.create(name="broken", source="name: broken\nsteps: []\n")
    running = make_run("flow", status="running")
    make_flow_run(
        running,
        "coding",
        status="waiting",
        position="draft",
        step_attempt=2,
        started_at=timezone.now() - timedelta(seconds=30),
    )
    page = dom(web.get("/flows/"))
    nav = page.find("nav", aria_label="Main").find("a", aria_current="page")
    assert nav.text.strip() == "Flows" and nav.attrs["href"] == "/flows/"
    coding = page.find("tr", id="flow-coding")
    assert coding.find("a").attrs["href"] == "/flows/coding/"
    assert coding.find("td", data_label="Steps").text.strip() == "3"
    assert coding.find("td", data_label="Runs").text.strip() == "2"
    assert coding.find("td", data_label="Last run").find("a").attrs["href"] == f"/runs/{running.pk}/trace/"
    assert page.find("tr", id="flow-broken").find("span", cls="chip-bad").text == "does not validate"
    runs = page.find("table", id="flow-runs").find("tbody").find_all("tr")
    assert [r.find("th").text.strip() for r in runs] == [f"#{running.pk}", f"#{flow_trace['run'].pk}"]
    now_row, done_row = runs
    assert " ".join(now_row.find("td", data_label="Step").text.split()) == "draft attempt 2"
    assert now_row.find("span", cls="status").text.strip() == "Waiting for a step's run"
    assert "so far" in now_row.find("td", data_label="Duration").text
    assert done_row.find("td", data_label="Duration").text.strip() == "1 s"
    assert done_row.find("a", cls="trace-link").attrs["href"] == f"/runs/{flow_trace['run'].pk}/trace/"


def test_a_flows_page_shows_its_steps_runs_and_definition(web, flow_trace):
    Flow.objects.create(name="coding", description="Fix a bug, test it.", source=SOURCE)
    page = dom(web.get("/flows/coding/"))
    steps = page.find("ol", id="flow-steps").find_all("li")
    assert [" ".join(s.text.split()) for s in steps] == [
        "inspect set → draft", "draft agent → test", "test set → end",
    ]  # fmt: skip
    assert page.find("pre", id="flow-source").text == SOURCE
    runs = page.find("table", id="flow-runs").find("tbody").find_all("tr")
    assert [r.attrs["id"] for r in runs] == [f"flow-run-{flow_trace['flow_run'].pk}"]
    trace_page = dom(web.get(f"/runs/{flow_trace['run'].pk}/trace/"))  # the trace links to the stored flow
    assert trace_page.find("section", id="trace-facts").find("a").attrs["href"] == "/flows/coding/"


def test_an_unknown_flow_is_a_404_and_an_empty_flows_page_says_so(web, db):
    assert web.get("/flows/nope/").status_code == 404
    page = dom(web.get("/flows/"))
    assert page.find("table", id="flows-list").find("p", cls="empty-title").text == "No flow is stored."
    assert page.find("table", id="flow-runs").find("p", cls="empty-title").text == "No flow has run yet."


def test_the_flows_page_lists_the_flow_files_under_the_roots_valid_or_not(web, db, settings, tmp_path):
    settings.AGENTFLOW_FLOWS_ROOTS = [str(tmp_path), str(tmp_path / "missing")]
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "good.yaml").write_text(SOURCE)
    (tmp_path / "bad.yml").write_text("name: bad\nsteps:\n  - {id: a, type: teleport}\n")
    (tmp_path / "notes.txt").write_text("not a flow")
    run = make_run("flow", status="succeeded")
    make_flow_run(run, "coding", status="succeeded", position="end")
    rows = dom(web.get("/flows/")).find("table", id="flow-files").find("tbody").find_all("tr")
    by_path = {r.find("th").find("code").text: r for r in rows}
    assert set(by_path) == {str(tmp_path / "team" / "good.yaml"), str(tmp_path / "bad.yml")}
    good = by_path[str(tmp_path / "team" / "good.yaml")]
    assert good.find("strong").text == "coding" and good.find("td", data_label="Steps").text.strip() == "3"
    assert good.find("td", data_label="Last run").find("a").attrs["href"] == f"/runs/{run.pk}/trace/"
    bad = by_path[str(tmp_path / "bad.yml")]
    assert bad.find("span", cls="chip-bad").text == "does not validate" and "teleport" in bad.text


def test_the_example_flows_are_listed_with_their_project_paths(web, db):
    rows = dom(web.get("/flows/")).find("table", id="flow-files").find("tbody").find_all("tr")
    paths = {r.find("th").find("code").text for r in rows}
    run_links = {a.attrs["href"] for r in rows for a in r.find("th").find_all("a")}
    assert "/flows/run/?flow=examples/flows/policies.yaml" in run_links
    assert {"examples/flows/policies.yaml", "examples/multi_agent/coding_assistant/flow.yaml",
            "examples/multi_agent/chat_bot/flow.yaml"} <= paths  # fmt: skip
    assert not any(r.find_all("span", cls="chip-bad") for r in rows)


# --- what the engine really writes ----------------------------------------------------------------


def test_a_flow_run_by_the_engine_is_drawn_from_the_spans_it_wrote(web, settings, tmp_path):
    from flows import api

    settings.AGENTFLOW_FLOWS_ROOTS = [str(tmp_path)]
    path = tmp_path / "flow.yaml"
    path.write_text(
        "name: engine_demo\n"
        "preset: dev\n"
        "steps:\n"
        "  - {id: hello, type: set, with: {values: {greeting: hi}}}\n"
        '  - {id: broken, type: set, with: {values: {x: "{{ $ctx.missing.key }}"}}}\n'
        "  - {id: note, type: audit, with: {record: done}}\n"
    )
    result = api.run(str(path), {})
    assert result.status == "succeeded", result.error
    page = dom(web.get(f"/runs/{result.run_id}/trace/"))
    rows = rows_of(page)
    assert [(r.find("span", cls="wf-title").text, r.attrs["class"].split()[1]) for r in rows] == [
        ("flow engine_demo", "wf-depth-0"),
        ("step hello", "wf-depth-1"),
        ("step broken", "wf-depth-1"),
        ("step note", "wf-depth-1"),
    ]
    broken, note = rows[2], rows[3]
    assert broken.attrs["data-status"] == "error"
    assert broken.find("span", cls="wf-attempts").text == "2 attempts"  # dev: 2 attempts
    assert "bad reference ctx.missing.key" in broken.find("span", cls="wf-message").text
    assert note.find("span", cls="wf-events").text.strip() == "audit"
    body = web.get(f"/api/v1/runs/{result.run_id}/trace/").json()
    assert body["source"] == "spans" and body["flow"]["status"] == "succeeded"
    assert body["rows"][0]["width_pct"] == 100.0 and body["totals"]["errors"] == 1
    assert all(r["left_pct"] >= 0 and r["left_pct"] + r["width_pct"] <= 100.001 for r in body["rows"])
