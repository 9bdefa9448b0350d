# ruff: noqa: E501  (flow files written inline as YAML)
"""The flow engine without a gateway: validation, templates, policies and presets, the local step
types, routers and loops, the emergency stop and pauses between steps, resuming after a worker
died, and the command step through the real executor (flows/engine.py, flows/steps.py)."""

from __future__ import annotations

import json
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from flows import api, engine, spec
from flows.models import FlowRun, Span
from scheduler import audit, controls, stops
from scheduler.models import AuditEntry, Run

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


@pytest.fixture(autouse=True)
def _roots(settings, tmp_path, redis_prefix):
    settings.AGENTFLOW_FLOWS_ROOTS = [str(tmp_path)]


def write_flow(tmp_path, text: str, name: str = "flow.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def problems(text: str) -> list[str]:
    with pytest.raises(spec.FlowError) as err:
        spec.parse(textwrap.dedent(text))
    return err.value.problems


# --- validation -------------------------------------------------------------------------------------


def test_validation_names_every_problem_before_anything_runs():
    found = problems(
        """
        name: bad
        preset: nightly
        steps:
          - {id: a, type: teleport}
          - {id: a, type: set, with: {values: {x: "{{ ctx.x }}"}}}
          - {id: c, type: router, with: {value: 1, routes: [{when: {equals: 1}, goto: nowhere}]}}
        """
    )
    text = "\n".join(found)
    assert "unknown preset 'nightly'" in text
    assert "unknown type 'teleport'" in text
    assert "duplicate id" in text
    assert "bad reference '{{ ctx.x }}'" in text


def test_a_goto_to_a_missing_step_and_a_loop_with_no_way_out_are_refused():
    assert any(
        "'nowhere', which is not a step" in p
        for p in problems(
            """
        name: f
        steps:
          - {id: r, type: router, with: {value: 1, routes: [{when: {equals: 1}, goto: nowhere}]}}
        """
        )
    )
    loop = problems(
        """
        name: f
        steps:
          - {id: a, type: set, next: b}
          - {id: b, type: set, next: a}
        """
    )
    assert loop == ["f: steps a, b loop with no way out (add a router exit or next: end)"]


def test_unknown_inputs_and_missing_required_ones_are_named():
    found = problems(
        """
        name: f
        steps:
          - {id: a, type: agent, with: {promt: hi}}
        """
    )
    assert any("unknown input 'promt' for agent" in p for p in found)
    assert any("agent needs 'prompt'" in p for p in found)


def test_presets_and_layers_make_the_policy():
    flow = spec.parse(
        textwrap.dedent(
            """
        name: f
        policy: {timeout: 9}
        steps:
          - {id: a, type: set, policy: {retry: {max_attempts: 4}}}
          - {id: human_support, type: set}
        """
        )
    )
    dev = flow.policy_of(flow.step("a"), "dev")
    assert (dev.max_attempts, dev.delay, dev.timeout, dev.fail_fast, dev.on_error) == (
        4,
        0.2,
        9.0,
        False,
        "continue",
    )
    prod = flow.policy_of(flow.step("a"), "prod")
    assert (prod.fail_fast, prod.on_error, prod.goto, prod.timeout) == (True, "goto", "human_support", 9.0)


# --- running local steps ------------------------------------------------------------------------------


def test_a_flow_runs_as_a_run_with_its_context_spans_and_summary(tmp_path):
    path = write_flow(
        tmp_path,
        """
        name: greet
        context: {who: world}
        steps:
          - id: hello
            type: set
            with: {values: {greeting: "hello {{ $ctx.who }}", copy: "{{ $ctx.items }}"}}
          - id: route
            type: router
            with:
              value: "{{ $ctx.items | lines }}"
              routes: [{when: {contains: b}, goto: done}]
              default: hello
          - id: never
            type: set
            with: {values: {never: true}}
          - id: done
            type: summary
            with: {title: "{{ $ctx.greeting }}", changes: "{{ $ctx.copy }}", next_actions: [rest]}
    """,
    )
    result = api.run(path, {"items": ["a", "b"]})
    assert result.status == "succeeded", result.error
    ctx = result.context
    assert ctx["greeting"] == "hello world" and ctx["copy"] == ["a", "b"] and "never" not in ctx
    assert ctx["summary"]["json"]["title"] == "hello world"
    assert "Tests: not available" in ctx["summary"]["report"]  # the fallback, policy continue
    run = Run.objects.get(pk=result.run_id)
    assert (run.kind, run.status, run.result) == ("flow", "succeeded", ctx["summary"]["report"])
    spans = list(Span.objects.filter(run=run))
    names = [s.name for s in spans]
    assert names == ["flow greet", "step hello", "step route", "step done"]
    root = spans[0]
    assert all(s.parent_span_id == root.span_id and s.trace_id == root.trace_id for s in spans[1:])
    assert all(s.start_ns <= s.end_ns and root.start_ns <= s.start_ns for s in spans)


def test_retry_then_continue_records_the_error_and_goes_on(tmp_path):
    path = write_flow(
        tmp_path,
        """
        name: f
        preset: dev
        steps:
          - {id: broken, type: set, with: {values: {x: "{{ $ctx.missing.key }}"}}}
          - {id: after, type: set, with: {values: {after: yes}}}
    """,
    )
    result = api.run(path, {})
    assert result.status == "succeeded"
    assert result.context["after"] is True
    assert result.context["errors"] == [
        {"step": "broken", "error": "bad reference ctx.missing.key: ctx has no 'missing'"}
    ]
    span = Span.objects.get(run_id=result.run_id, name="step broken")
    assert (span.status, span.attributes["flow.step.attempts"]) == ("error", 2)  # dev: 2 attempts


def test_prod_fails_fast_and_goes_to_human_support_when_the_flow_has_one(tmp_path):
    body = """
        name: f
        preset: prod
        steps:
          - {id: broken, type: set, with: {values: {x: "{{ $ctx.missing }}"}}}
          - {id: after, type: set, with: {values: {after: yes}}, next: end}
    """
    result = api.run(write_flow(tmp_path, body), {})
    assert (result.status, result.error) == (
        "failed",
        "step broken: bad reference ctx.missing: ctx has no 'missing'",
    )
    human = body + "      - {id: human_support, type: set, with: {values: {human: yes}}}\n"
    result = api.run(write_flow(tmp_path, human, "h.yaml"), {})
    assert result.status == "succeeded"
    assert result.context["human"] is True and "after" not in result.context


def test_a_router_loop_is_bounded_by_max_visits(tmp_path):
    path = write_flow(
        tmp_path,
        """
        name: loop
        steps:
          - {id: work, type: set, append: {}, with: {append: {tries: 1}}}
          - id: again
            type: router
            with: {value: "NG", routes: [{when: {equals: NG}, goto: work}], max_visits: 3, exhausted: out}
          - {id: out, type: set, with: {values: {gave_up: yes}}}
    """.replace("append: {}, ", ""),
    )
    result = api.run(path, {})
    assert result.status == "succeeded"
    assert result.context["tries"] == [1, 1, 1] and result.context["gave_up"] is True


def test_patch_applies_virtually_and_refuses_paths_outside(tmp_path):
    app = tmp_path / "ws"
    app.mkdir()
    (app / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    (app / "logo.png").write_bytes(b"\x89PNG\0\0")
    diff = "--- a/calc.py\n+++ b/calc.py\n@@ -1,2 +1,2 @@\n def add(a, b):\n-    return a - b\n+    return a + b\n"
    flow = f"""
        name: p
        steps:
          - {{id: inspect, type: workspace_inspector, with: {{root: "{app}", allowed_extensions: [.py]}}, output: workspace}}
          - {{id: patch, type: patch, with: {{diff: "{{{{ $ctx.diff }}}}", allowed_paths: [calc.py]}}, output: patch}}
    """
    result = api.run(write_flow(tmp_path, flow), {"diff": diff})
    assert result.status == "succeeded", result.error
    ctx = result.context
    assert ctx["workspace"]["files"]["calc.py"].endswith("return a + b\n")
    assert ctx["patch"]["applied"] == ["calc.py"] and ctx["patch"]["written"] == []
    assert ctx["workspace"]["structure_excluded"] == [
        {"path": "logo.png", "reason": "extension .png not allowed"}
    ]
    assert (app / "calc.py").read_text().endswith("a - b\n")  # nothing on disk without --write
    bad = diff.replace("calc.py", "../etc/passwd")
    result = api.run(write_flow(tmp_path, flow, "bad.yaml"), {"diff": bad})
    assert "is refused (absolute or with ..)" in result.context["errors"][0]["error"]
    written = api.run(write_flow(tmp_path, flow, "w.yaml"), {"diff": diff}, write=True)
    assert written.context["patch"]["written"] == ["calc.py"]
    assert (app / "calc.py").read_text().endswith("a + b\n")


def test_faq_answers_with_a_confidence_and_audit_writes_a_row(tmp_path):
    kb = tmp_path / "kb.json"
    kb.write_text(
        json.dumps(
            [
                {
                    "id": "reset",
                    "question": "How do I reset my password?",
                    "answer": "Use the link.",
                    "keywords": ["password", "reset"],
                },
                {
                    "id": "price",
                    "question": "What does it cost?",
                    "answer": "10 EUR.",
                    "keywords": ["price", "cost"],
                },
            ]
        )
    )
    path = write_flow(
        tmp_path,
        f"""
        name: bot
        steps:
          - {{id: faq, type: faq, with: {{knowledge_base: "{kb}", question: "{{{{ $ctx.q }}}}"}}, output: answer}}
          - {{id: audit, type: audit, with: {{record: "{{{{ $ctx.answer }}}}"}}}}
    """,
    )
    result = api.run(path, {"q": "I forgot my password, how to reset it?"})
    assert result.context["answer"]["id"] == "reset" and result.context["answer"]["confidence"] >= 0.5
    low = api.run(path, {"q": "Is the weather nice on Mars?"})
    assert low.context["answer"]["confidence"] < 0.3
    entry = AuditEntry.objects.filter(action="flow.audit").order_by("id").first()
    assert entry is not None and '"reset"' in entry.message


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[bytes] = []
    failures = 0

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if _Receiver.failures > 0:
            _Receiver.failures -= 1
            self.send_response(503)
            self.end_headers()
            return
        _Receiver.bodies.append(body)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def test_http_handoff_retries_a_local_receiver_until_it_accepts(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Receiver.bodies, _Receiver.failures = [], 2
    try:
        path = write_flow(
            tmp_path,
            f"""
            name: h
            steps:
              - id: handoff
                type: http_handoff
                with: {{url: "http://127.0.0.1:{server.server_port}/hook", payload: {{text: "{{{{ $ctx.msg }}}}"}},
                        retry: {{max_attempts: 3, delay: 0.05}}}}
                output: handoff
        """,
        )
        result = api.run(path, {"msg": "help"})
    finally:
        server.shutdown()
    assert result.context["handoff"] == {"status": 200, "body": "ok", "attempts": 3}
    assert [json.loads(b) for b in _Receiver.bodies] == [{"text": "help"}]


# --- stop, pause, resume --------------------------------------------------------------------------------


def test_the_emergency_stop_aborts_the_flow_between_steps_and_a_retry_resumes_there(tmp_path):
    path = write_flow(
        tmp_path,
        """
        name: s
        steps:
          - {id: one, type: set, with: {append: {done: one}}}
          - {id: two, type: set, with: {append: {done: two}}}
    """,
    )
    original = engine._run_step
    actor = audit.Actor.system("test")

    def engage_after_one(fr, flow, step, tracer):
        original(fr, flow, step, tracer)
        if step.id == "one":
            stops.engage(actor, reason="test: stop after step one")

    engine._run_step = engage_after_one
    try:
        result = api.run(path, {})
    finally:
        engine._run_step = original
    assert result.status == "aborted"
    fr = FlowRun.objects.get(run_id=result.run_id)
    assert fr.status in ("aborted", "cancelled") and fr.position == "two"
    assert fr.context["done"] == ["one"]
    stops.release(actor, scope="all", reason="test: done")
    controls.retry_run(actor, Run.objects.get(pk=result.run_id))
    again = api.drive(result.run_id)
    assert again.status == "succeeded", again.error
    assert again.context["done"] == ["one", "two"]  # step one did not run again


def test_a_pause_holds_the_flow_between_steps(tmp_path):
    path = write_flow(
        tmp_path,
        """
        name: p
        steps:
          - {id: one, type: set, with: {values: {one: yes}}}
    """,
    )
    actor = audit.Actor.system("test")
    controls.pause(actor, "all", reason="test")
    with pytest.raises(api.FlowRefused, match="is parked"):
        api.run(path, {})


def test_a_new_attempt_resumes_at_the_step_it_was_in(tmp_path):
    """A worker died in step two: its state says so; the next attempt runs two, not one again."""
    path = write_flow(
        tmp_path,
        """
        name: r
        steps:
          - {id: one, type: set, with: {append: {done: one}}}
          - {id: two, type: set, with: {append: {done: two}}}
    """,
    )
    run = api.queue.enqueue(kind="flow", params={"flow": path}, input={})
    run.status = "running"
    run.save()
    fr = engine.create(run)
    fr.context["done"] = ["one"]
    fr.position, fr.steps_done = "two", 1
    fr.save()
    assert engine.advance(fr.pk, drive=True) == "succeeded"
    fr.refresh_from_db()
    assert fr.context["done"] == ["one", "two"]


# --- steps that are runs of other kinds ----------------------------------------------------------------

SAMPLE = {
    "calc.py": "def add(a, b):\n    return a - b\n",
    "tests/test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
}
TEST_FLOW = """
    name: t
    steps:
      - {id: tests, type: test_executor, with: {args: [-q, tests]}, output: tests}
      - id: verdict
        type: router
        with: {value: "{{ $ctx.tests.passed }}", routes: [{when: {truthy: true}, goto: end}], default: fix}
      - {id: fix, type: patch, with: {diff: "{{ $ctx.diff }}"}, output: patch}
      - {id: again, type: test_executor, with: {args: [-q, tests]}, output: again}
"""
DIFF = (
    "--- a/calc.py\n+++ b/calc.py\n@@ -1,2 +1,2 @@\n def add(a, b):\n-    return a - b\n+    return a + b\n"
)


@pytest.fixture
def executor_on(settings):
    from executor import runner

    problem = runner.sandbox_problem()
    if problem:
        pytest.fail(f"the executor's sandbox does not work here ({problem}): run bin/ensure-bwrap")
    settings.AGENTFLOW_EXECUTOR_ENABLED = True
    settings.AGENTFLOW_EXECUTOR_SANDBOX = "bwrap"


def test_a_test_step_runs_pytest_in_the_sandbox_as_a_command_run(tmp_path, executor_on):
    result = api.run(write_flow(tmp_path, TEST_FLOW), {"workspace": {"files": SAMPLE}, "diff": DIFF})
    assert result.status == "succeeded", result.error
    ctx = result.context
    assert (
        ctx["tests"]["returncode"] == 1
        and not ctx["tests"]["passed"]
        and "assert -1 == 5" in ctx["tests"]["stdout"]
    )
    assert ctx["again"]["passed"] and "1 passed" in ctx["again"]["stdout"]
    children = Run.objects.filter(kind="command", triggered_by__startswith=f"flow run {result.run_id} ")
    assert [c.status for c in children.order_by("id")] == ["succeeded", "succeeded"]
    spans = Span.objects.filter(run_id=result.run_id, kind="command")
    assert spans.count() == 2 and all(s.child_run_id for s in spans)
    assert {s.parent_span_id for s in spans} <= set(
        Span.objects.filter(run_id=result.run_id, kind="step").values_list("span_id", flat=True)
    )


@pytest.mark.django_db(transaction=True)
def test_in_a_worker_the_flow_waits_without_the_worker_and_resumes_when_its_run_ends(tmp_path, executor_on):
    """The worker path: start returns Started while the command run waits; that run's end (the
    run_finished signal, on commit) resumes the flow in a task, which settles the flow's run."""
    from django.db.models import Q

    from scheduler import queue
    from tests.support.receivers import eager_celery

    run = queue.enqueue(
        kind="flow",
        params={"flow": write_flow(tmp_path, TEST_FLOW)},
        input={"workspace": {"files": SAMPLE}, "diff": DIFF},
    )
    with eager_celery():  # the dispatch and resume tasks run here, as a worker would run them
        queue.start_next("worker-a", scope=Q(pk=run.pk))
    run.refresh_from_db()
    fr = FlowRun.objects.get(run=run)
    assert (run.status, fr.status, fr.position) == ("succeeded", "succeeded", "end")
    assert fr.context["again"]["passed"] and not fr.context["tests"]["passed"]
    assert not run.attempt_set.get().in_worker  # start returned Started: no worker waited
    children = Run.objects.filter(triggered_by__startswith=f"flow run {run.pk} ").order_by("id")
    # Both started by the engine's dispatch (a worker), not by the flow's own process.
    assert [c.attempt_set.get().worker for c in children] != ["worker-a", "worker-a"]
    assert [c.status for c in children] == ["succeeded", "succeeded"]
