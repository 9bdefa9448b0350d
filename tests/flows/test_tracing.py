"""The tracers (flows/tracing/): choosing one by name, SQLite's tables, batches and WAL, the
console's lines, and OpenTelemetry over gRPC and HTTP into a real OTLP receiver process
(tests/support/otlp.py), read back from it; and a flow run's trace through each of them."""

from __future__ import annotations

import contextlib
import io
import sqlite3
import textwrap
import time

import pytest

from flows import api, engine, tracing
from flows.models import FlowRun, Span
from flows.tracing.console import ConsoleTracer
from flows.tracing.otel import OTelTracer
from flows.tracing.sqlite import SQLiteTracer
from tests.support import otlp
from tests.support.ports import closed_port

T0 = 1_780_000_000_000_000_000


def span(i: int = 0, **kw) -> tracing.SpanData:
    fields = {
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": f"{i + 1:016x}",
        "name": f"step s{i}",
        "start_ns": T0 + i * 1_000_000,
        "end_ns": T0 + i * 1_000_000 + 250_000,
        "parent_span_id": "00f067aa0ba902b7",
        "attributes": {"flow.step.type": "set", "n": i},
    }
    fields.update(kw)
    return tracing.SpanData(**fields)


@pytest.fixture
def receiver(tmp_path):
    rx = otlp.start(tmp_path / "otlp.jsonl")
    yield rx
    rx.stop()


@pytest.fixture(autouse=True)
def _fresh_tracer_cache():
    yield
    engine.close_tracers()


# --- choosing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("jaeger", {}, "unknown tracer 'jaeger' (one of none, console, sqlite, otel)"),
        ("sqlite", {"path": "x"}, "tracer sqlite takes db_path, batch_size (got path)"),
        ("none", {"db_path": "x"}, "tracer none takes no arguments (got db_path)"),
        ("sqlite", {"batch_size": "many"}, "tracer sqlite: batch_size must be a number (got 'many')"),
        ("otel", {"protocol": "thrift"}, "tracer otel: protocol is grpc or http (got 'thrift')"),
        ("otel", {"exporter_endpoint": "127.0.0.1:4317"}, "is an http:// or https:// URL"),
        ("console", {"stream": "file"}, "stream is stdout or stderr"),
    ],
)
def test_a_tracer_is_chosen_by_name_and_bad_arguments_are_named(name, args, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tracing.make(name, args)


def test_every_tracer_has_the_same_interface(tmp_path):
    built = [
        tracing.make("none"),
        tracing.make("console"),
        tracing.make("sqlite", {"db_path": str(tmp_path / "t.db")}),
        tracing.make("otel", {"exporter_endpoint": "http://127.0.0.1:4317"}),
    ]
    assert [t.name for t in built] == ["none", "console", "sqlite", "otel"]
    assert all(isinstance(t, tracing.TracerDB) for t in built)


def test_a_relative_sqlite_path_is_under_the_data_directory(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    tracer = tracing.make("sqlite", {"db_path": "runs/a.db"})
    assert isinstance(tracer, SQLiteTracer) and tracer.db_path == tmp_path / "traces" / "runs" / "a.db"


# --- SQLite ---------------------------------------------------------------------------------------


def test_sqlite_writes_spans_and_events_in_batches_readable_with_plain_sqlite3(tmp_path):
    db = tmp_path / "traces.db"
    tracer = SQLiteTracer(db, batch_size=100)
    tracer.connect()
    reader = sqlite3.connect(db)
    assert reader.execute("pragma journal_mode").fetchone() == ("wal",)
    for i in range(99):
        tracer.record_span(span(i))
    assert reader.execute("select count(*) from spans").fetchone() == (0,)  # not yet a batch
    tracer.record_event(tracing.EventData(span().trace_id, span(3).span_id, "step.retry", T0, {"attempt": 1}))
    assert reader.execute("select count(*) from spans").fetchone() == (99,)  # the 100th row: one commit
    tracer.record_span(span(99, status="error", status_message="boom"))
    tracer.close()
    rows = reader.execute(
        "select name, duration_ms, status, status_message, parent_span_id, json_extract(attributes, '$.n')"
        " from spans order by start_ns"
    ).fetchall()
    assert len(rows) == 100
    assert rows[0] == ("step s0", 0.25, "ok", "", "00f067aa0ba902b7", 0)
    assert rows[-1][2:4] == ("error", "boom")
    events = reader.execute("select name, span_id, json_extract(attributes, '$.attempt') from events")
    assert events.fetchall() == [("step.retry", span(3).span_id, 1)]


def test_sqlite_keeps_a_batch_that_failed_to_commit_for_the_next_flush(tmp_path):
    db = tmp_path / "traces.db"
    tracer = SQLiteTracer(db)
    tracer.connect()
    tracer.record_span(span(0))
    locker = sqlite3.connect(db, timeout=0, isolation_level=None)
    locker.execute("begin exclusive")
    tracer._conn.execute("pragma busy_timeout=50")  # not 10 s for this test
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        tracer.flush()
    locker.execute("rollback")
    tracer.flush()
    assert sqlite3.connect(db).execute("select count(*) from spans").fetchone() == (1,)
    tracer.close()


# --- console --------------------------------------------------------------------------------------


def test_console_prints_a_readable_line_per_span_and_event():
    out = io.StringIO()
    tracer = ConsoleTracer(out)
    tracer.record_span(
        span(
            0,
            name="agent main",
            kind="agent",
            attributes={
                "gen_ai.agent.name": "main",
                "gen_ai.usage.input_tokens": 412,
                "gen_ai.usage.output_tokens": 96,
            },
        )  # fmt: skip
    )
    tracer.record_span(span(1, status="error", status_message="bad reference ctx.x"))
    tracer.record_event(tracing.EventData(span().trace_id, span(1).span_id, "step.retry", T0, {"attempt": 1}))
    tracer.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert "trace 4bf92f35  agent main" in lines[0] and "0.2 ms" in lines[0]
    assert lines[0].endswith("agent=main in=412 out=96")
    assert " error " in lines[1] and lines[1].endswith("  ! bad reference ctx.x")
    assert lines[2].endswith("· event step.retry  attempt=1")


# --- OpenTelemetry --------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_otel_exports_spans_with_their_ids_parents_status_events_and_genai_attributes(receiver, protocol):
    url = receiver.grpc_url if protocol == "grpc" else receiver.http_url
    tracer = tracing.make("otel", {"exporter_endpoint": url, "protocol": protocol, "service_name": "af-test"})
    tracer.connect()
    root = span(0, name="flow f", kind="flow", parent_span_id=None)
    agent = span(1, name="agent main", kind="agent", parent_span_id=root.span_id, attributes={
        "gen_ai.agent.name": "main", "gen_ai.request.model": "stub", "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 3, "agentflow.usage": {"cost": 0.01},
    })  # fmt: skip
    failed = span(2, parent_span_id=root.span_id, status="error", status_message="boom")
    tracer.record_event(tracing.EventData(failed.trace_id, failed.span_id, "step.retry", T0, {"attempt": 1}))
    for s in (agent, failed, root):
        tracer.record_span(s)
    tracer.close()
    got = {s["name"]: s for s in receiver.wait_for(3)}
    assert set(got) == {"flow f", "agent main", "step s2"}
    assert all(s["transport"] == protocol and s["service"] == "af-test" for s in got.values())
    assert all(s["trace_id"] == root.trace_id for s in got.values())
    assert got["flow f"]["parent_span_id"] == "" and got["agent main"]["parent_span_id"] == root.span_id
    assert got["agent main"]["span_id"] == agent.span_id
    assert got["agent main"]["kind"] == 3  # SPAN_KIND_CLIENT
    assert got["agent main"]["attributes"]["gen_ai.usage.input_tokens"] == 12
    assert got["agent main"]["attributes"]["agentflow.usage"] == '{"cost":0.01}'
    assert (got["agent main"]["start_ns"], got["agent main"]["end_ns"]) == (agent.start_ns, agent.end_ns)
    assert (got["step s2"]["status_code"], got["step s2"]["status_message"]) == (2, "boom")
    assert got["step s2"]["events"] == [{"name": "step.retry", "attributes": {"attempt": 1}}]


def test_otel_retries_a_receiver_that_refuses_at_first(tmp_path):
    rx = otlp.start(tmp_path / "otlp.jsonl", fail_first=2)
    try:
        tracer = tracing.make("otel", {"exporter_endpoint": rx.grpc_url, "timeout": "20"})
        tracer.connect()
        tracer.record_span(span(0))
        tracer.close()  # waits for the export, which backs off and tries again
        assert [s["name"] for s in rx.wait_for(1)] == ["step s0"]
    finally:
        rx.stop()


def test_recording_and_flushing_do_not_wait_on_a_receiver_that_is_down():
    url = f"http://127.0.0.1:{closed_port()}"
    tracer = OTelTracer(url, timeout=4, flush_timeout=0.2)
    tracer.connect()
    started = time.monotonic()
    for i in range(1000):
        tracer.record_span(span(i))
    tracer.flush()
    assert time.monotonic() - started < 2  # the export (4 s of retries) goes on in the background
    tracer.close()  # waits for it


# --- a flow's trace -------------------------------------------------------------------------------


FLOW = """
    name: traced
    steps:
      - {id: one, type: set, with: {values: {a: 1}}}
      - {id: broken, type: set, with: {values: {x: "{{ $ctx.missing }}"}}, policy: {on_error: continue}}
      - {id: two, type: summary, with: {title: traced}}
"""


@pytest.fixture
def flow_file(tmp_path, settings):
    settings.AGENTFLOW_FLOWS_ROOTS = [str(tmp_path)]
    path = tmp_path / "flow.yaml"
    path.write_text(textwrap.dedent(FLOW))
    return str(path)


@pytest.mark.django_db
@pytest.mark.redis
def test_a_flow_run_is_one_trace_in_sqlite_and_the_span_rows(flow_file, tmp_path, redis_prefix):
    db = tmp_path / "flow.db"
    result = api.run(flow_file, {}, tracer="sqlite", tracer_args={"db_path": str(db)})
    assert result.status == "succeeded", result.error
    fr = FlowRun.objects.get(pk=result.flow_run_id)
    query = "select trace_id, span_id, parent_span_id, name, status from spans"
    rows = sqlite3.connect(db).execute(query).fetchall()
    assert {r[0] for r in rows} == {fr.trace_id}
    by_name = {r[3]: r for r in rows}
    assert set(by_name) == {"flow traced", "step one", "step broken", "step two"}
    root = by_name["flow traced"]
    assert all(by_name[n][2] == root[1] for n in ("step one", "step broken", "step two"))
    assert by_name["step broken"][4] == "error"
    events = sqlite3.connect(db).execute("select name from events").fetchall()
    assert events == [("step.retry",)]  # dev: 2 attempts, one retry
    stored = set(Span.objects.filter(run_id=result.run_id).values_list("span_id", flat=True))
    assert stored == {r[1] for r in rows}


@pytest.mark.django_db
@pytest.mark.redis
def test_a_flow_run_is_one_trace_in_the_otlp_receiver(flow_file, receiver, redis_prefix):
    result = api.run(flow_file, {}, tracer="otel", tracer_args={"exporter_endpoint": receiver.grpc_url})
    assert result.status == "succeeded", result.error
    engine.close_tracers()
    got = receiver.wait_for(4)
    fr = FlowRun.objects.get(pk=result.flow_run_id)
    assert {s["trace_id"] for s in got} == {fr.trace_id}
    assert sorted(s["name"] for s in got) == ["flow traced", "step broken", "step one", "step two"]
    broken = next(s for s in got if s["name"] == "step broken")
    assert broken["status_code"] == 2 and broken["events"][0]["name"] == "step.retry"


@pytest.mark.django_db
@pytest.mark.redis
def test_run_flow_switches_tracers_from_the_command_line(flow_file, tmp_path, redis_prefix):
    from django.core.management import call_command

    out = io.StringIO()
    db = tmp_path / "cli.db"
    call_command("run_flow", flow_file, "--tracer", "sqlite", "--tracer-arg", f"db_path={db}", stdout=out)
    text = out.getvalue()
    assert f" in {db} (the waterfall: /runs/" in text and "flow traced: succeeded" in text
    assert sqlite3.connect(db).execute("select count(*) from spans").fetchone() == (4,)

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        call_command("run_flow", flow_file, "--tracer", "console", stdout=io.StringIO())
    lines = [line for line in out.getvalue().splitlines() if "  trace " in line]
    assert [line.split()[3:5] for line in lines if "· event" not in line] == [
        ["step", "one"], ["step", "broken"], ["step", "two"], ["flow", "traced"]
    ]  # fmt: skip
    assert sum("· event step.retry" in line for line in lines) == 1
