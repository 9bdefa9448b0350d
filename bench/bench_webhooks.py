"""Issue 11 §2, webhook intake under load, over a real Daphne on a free loopback port.

1. **Sustained**: RATE (200) signed GitHub ``pull_request`` deliveries/s for SECONDS (60; ``python -m
   bench webhooks --seconds N`` for a smoke run) to ``/webhooks/<slug>/`` of a GitHub endpoint with
   a secret, filters, a branch, an input template and the per-endpoint rate limit on (set high
   enough never to refuse): verified, recorded on the delivery log, one run queued per delivery
   (a no-op job; no worker, the runs just queue). Open loop: send i is due at t0 + i / rate
   whatever happened before it, and its ack latency is measured from that due time (a slow server
   is not hidden by the generator waiting for it). Every delivery has its own
   ``X-GitHub-Delivery``; one send in RESEND_EVERY (25) is a deliberate resend of a delivery sent
   a second earlier (the same body, headers and id: GitHub's "Redeliver"), which must answer 200
   duplicate and start nothing. Then the database is checked: every delivery recorded, accepted
   once with exactly one run (0 lost), no delivery id with a second run or a second accepted row
   (0 duplicated), every request on the log. Target: ack p99 ≤ 100 ms, 0 lost, 0 duplicated.
2. **Highest sustained verified rate**: steps of STEP_SECONDS (15) at rising rates (× 1.5 from
   RATE; one bisection step between the last passing and the first failing rate) until a step
   fails: p99 > 100 ms, an error, a lost or duplicated delivery, or a backlog (fewer than 97 % of
   the step's sends answered within its length + 1 s). Each step is checked in the database as
   in 1, then its rows are deleted, so every step starts from the same table sizes.
3. **Baseline in the same run**: a bare Django view that only answers 202
   (``bench/_bare_webhook_urls.py``; the same Daphne, ASGI handler, request threads and
   middleware; the URL conf holds nothing else), the same sends at the same rates: 1 and 2
   again. Ratios: highest rates, p50/p99 at RATE, server CPU per request.

Sizes: BENCH_WEBHOOKS_RATE, BENCH_WEBHOOKS_SECONDS, BENCH_WEBHOOKS_STEP_SECONDS,
BENCH_WEBHOOKS_CLIENTS (32 keep-alive connections: at most that many sends in flight; one asyncio
event loop sends them all, so the generator's own CPU stays small), BENCH_WEBHOOKS_BODY_BYTES
(16,000: a pull_request payload carries the repository and user objects, tens of KB at GitHub).
On the bench SQLite (fresh), or PostgreSQL with BENCH_DATABASE_URL (its tables are emptied)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import os
import secrets
import statistics
import subprocess
import time
from collections import Counter
from typing import Any

from bench import _common as common

RATE = float(os.environ.get("BENCH_WEBHOOKS_RATE", 200))
SECONDS = float(os.environ.get("BENCH_WEBHOOKS_SECONDS", 60))
STEP_SECONDS = float(os.environ.get("BENCH_WEBHOOKS_STEP_SECONDS", 15))
CLIENTS = int(os.environ.get("BENCH_WEBHOOKS_CLIENTS", 32))
BODY_BYTES = int(os.environ.get("BENCH_WEBHOOKS_BODY_BYTES", 16_000))
# Web processes sharing one listening socket (daphne --fd, as bench_api_runs), 1 by default: the
# highest verified rate is per process then.
WEB_PROCESSES = int(os.environ.get("BENCH_WEBHOOKS_WEB_PROCESSES", 1))
RESEND_EVERY = 25
STEP_FACTOR = 1.5
MAX_RATE = 5000.0
TARGET_P99_MS = 100.0
BACKLOG_SHARE = 0.97  # of a step's sends answered by its end + 1 s, else it fell behind
SLUG = "bench-github"
JOB = "bench-webhook"
INPUT = {
    "repository": "{{ payload.repository.full_name }}",
    "pr": "{{ payload.number }}",
    "title": "{{ payload.pull_request.title }}",
    "diff_url": "{{ payload.pull_request.diff_url }}",
}


# --- the sender -------------------------------------------------------------------------------


class Deliveries:
    """The sends of one phase: send i is a new delivery, or (one in RESEND_EVERY, after the first
    second) a resend of the delivery sent about a second earlier. Bodies are built and signed by
    the generator just before their due time (tens of µs), not held in memory."""

    def __init__(self, secret: str, rate: float, seconds: float, tag: str) -> None:
        self.secret = secret.encode()
        self.total = max(1, int(rate * seconds))
        self.tag = tag
        self.originals: list[int] = []  # send index → the delivery's number
        self.resend: list[bool] = []
        originals = 0
        for i in range(self.total):
            resend = i % RESEND_EVERY == RESEND_EVERY - 1 and originals > rate
            # A resend: the delivery first sent about one second ago.
            self.originals.append(originals - int(rate) if resend else originals)
            self.resend.append(resend)
            originals += not resend
        self.count = originals
        self.resends = self.total - originals
        # The payload's fixed part, padded with a PR description to about BODY_BYTES.
        probe = json.dumps(self.payload(0, ""))
        self.padding = "Lorem ipsum dolor sit amet. " * max(0, (BODY_BYTES - len(probe)) // 28)

    def delivery_id(self, n: int) -> str:
        return f"{self.tag}-{n:07d}"

    def payload(self, n: int, description: str) -> dict[str, Any]:
        url = f"https://github.example.test/acme/app/pull/{n}"
        return {
            "action": "opened",
            "number": n,
            "pull_request": {
                "number": n,
                "title": f"Change {n}",
                "body": description,
                "html_url": url,
                "diff_url": f"{url}.diff",
                "user": {"login": "octocat", "id": 1},
                "head": {"ref": f"feature/{n}", "sha": hashlib.sha1(str(n).encode()).hexdigest()},
                "base": {"ref": "main"},
            },
            "repository": {"full_name": "acme/app", "default_branch": "main"},
            "sender": {"login": "octocat", "id": 1},
        }

    def request(self, i: int) -> tuple[bytes, dict[str, str], str, bool]:
        n = self.originals[i]
        body = json.dumps(self.payload(n, self.padding)).encode()
        delivery = self.delivery_id(n)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/bench",
            "X-GitHub-Event": "pull_request",
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest(),
        }
        return body, headers, delivery, self.resend[i]


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes
) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a keep-alive connection; (status, response body)."""
    writer.write(head + body)
    await writer.drain()
    header = await reader.readuntil(b"\r\n\r\n")
    status = int(header.split(b" ", 2)[1])
    length = 0
    for line in header.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length) if length else b""


async def _send_all(port: int, deliveries: Deliveries, rate: float, connections: int) -> dict[str, Any]:
    """The open loop on one event loop: send i is started at its due time on a free keep-alive
    connection (up to ``connections`` in flight; a send waiting for one is late, and that counts
    in its latency, which runs from the due time)."""
    records: list[tuple[str, str, str, bool, float, float] | None] = [None] * deliveries.total
    late: list[float] = []
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(None)  # opened on first use
    path = f"/webhooks/{SLUG}/".encode()

    async def one(i: int, due: float, head: bytes, body: bytes, delivery: str, resend: bool) -> None:
        conn = await idle.get()
        sent = time.perf_counter()
        late.append((sent - due) * 1000)
        answer, label = "", ""
        try:
            if conn is None:
                conn = await asyncio.open_connection("127.0.0.1", port)
            status, raw = await asyncio.wait_for(_exchange(*conn, head, body), 60)
            label = str(status)
            if raw[:1] == b"{":
                answer = str(json.loads(raw).get("status", ""))
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ValueError,
        ) as exc:
            label = type(exc).__name__
            if conn is not None:
                conn[1].close()
            conn = None
        done = time.perf_counter()
        idle.put_nowait(conn)
        records[i] = (label, answer, delivery, resend, (done - due) * 1000, (done - sent) * 1000)

    tasks = []
    t0 = time.perf_counter() + 0.5
    for i in range(deliveries.total):
        body, headers, delivery, resend = deliveries.request(i)
        lines = [b"POST " + path + b" HTTP/1.1", b"Host: localhost", b"Content-Length: %d" % len(body)]
        lines += [f"{name}: {value}".encode() for name, value in headers.items()]
        head = b"\r\n".join(lines) + b"\r\n\r\n"
        due = t0 + i / rate
        pause = due - time.perf_counter()
        if pause > 0:
            await asyncio.sleep(pause)
        tasks.append(asyncio.create_task(one(i, due, head, body, delivery, resend)))
    await asyncio.gather(*tasks)
    ended = time.perf_counter()
    while not idle.empty():
        conn = idle.get_nowait()
        if conn is not None:
            conn[1].close()
    done = [r for r in records if r is not None]
    return {"_records": done, "_late": late, "_elapsed": ended - t0}


def send_all(port: int, deliveries: Deliveries, rate: float, connections: int) -> dict[str, Any]:
    """Every send at its due time (asyncio, one thread: the generator's own CPU stays small and
    threads do not delay each other's sends); per send (status, answer status, latency from the
    due time, service time), and how late the generator itself sent."""
    cpu_before = time.process_time()
    raw = asyncio.run(_send_all(port, deliveries, rate, connections))
    done, late = raw["_records"], raw["_late"]
    latencies = [r[4] for r in done]
    service = [r[5] for r in done]
    length = deliveries.total / rate
    return {
        "rate_target": rate,
        "seconds": round(length, 1),
        "sends": deliveries.total,
        "resends": sum(1 for r in done if r[3]),
        "rate_achieved": round(deliveries.total / raw["_elapsed"], 1),
        "answered_by_end_plus_1s": sum(1 for i, r in enumerate(done) if i / rate + r[4] / 1000 <= length + 1),
        "statuses": dict(Counter(r[0] for r in done)),
        "p50_ms": round(statistics.median(latencies), 2),
        "p95_ms": round(common.percentile(latencies, 95), 2),
        "p99_ms": round(common.percentile(latencies, 99), 2),
        "max_ms": round(max(latencies), 2),
        "service_p50_ms": round(statistics.median(service), 2),
        "service_p99_ms": round(common.percentile(service, 99), 2),
        "client_send_late_p99_ms": round(common.percentile(late, 99), 2),
        "client_cpu_ms_per_send": round((time.process_time() - cpu_before) * 1000 / deliveries.total, 3),
        "_records": done,
    }


# --- checking what the server did ----------------------------------------------------------


def check_answers(records: list[tuple[str, str, str, bool, float, float]]) -> dict[str, int]:
    """Per delivery id: exactly one 202 accepted among its copies, every other copy 200 duplicate."""
    by_id: dict[str, list[tuple[str, str]]] = {}
    for label, answer, delivery, _resend, _lat, _svc in records:
        by_id.setdefault(delivery, []).append((label, answer))
    wrong = 0
    for answers in by_id.values():
        ordered = sorted(answers)
        wrong += ordered != [("200", "duplicate")] * (len(answers) - 1) + [("202", "accepted")]
    resends_answered_duplicate = sum(
        1
        for label, answer, _d, resend, _l, _s in records
        if resend and (label, answer) == ("200", "duplicate")
    )
    errors = sum(1 for r in records if r[0] not in ("200", "202"))
    return {
        "answered_duplicate": sum(1 for r in records if (r[0], r[1]) == ("200", "duplicate")),
        "ids_answered_wrong": wrong,
        "errors": errors,
        "resends_answered_duplicate": resends_answered_duplicate,
    }


def check_database(endpoint_id: int, expected_ids: set[str], requests: int) -> dict[str, int]:
    """Lost: a sent delivery with no accepted row whose run exists. Duplicated: a second run or a
    second accepted row for one delivery id, or a run for an id never sent."""
    from scheduler.models import Run
    from webhooks.models import Delivery

    rows = list(
        Delivery.objects.filter(endpoint_id=endpoint_id).values_list("delivery_id", "verdict", "run_id")
    )
    prefix = f"webhook:{endpoint_id}:"
    runs = dict(
        Run.objects.filter(trigger=Run.Trigger.WEBHOOK, dedupe_key__startswith=prefix).values_list(
            "pk", "dedupe_key"
        )
    )
    per_id_runs = Counter(key.removeprefix(prefix) for key in runs.values())
    accepted = Counter(d for d, verdict, _ in rows if verdict == "accepted")
    with_run = {
        d for d, verdict, run in rows if verdict == "accepted" and run in runs and runs[run] == prefix + d
    }
    return {
        "requests_recorded": len(rows),
        "requests_not_recorded": requests - len(rows),
        "accepted": sum(accepted.values()),
        "runs": len(runs),
        "lost": len(expected_ids - with_run),
        "duplicated": sum(n - 1 for n in per_id_runs.values())
        + sum(n - 1 for n in accepted.values())
        + len(set(per_id_runs) - expected_ids),
        "duplicate_rows": sum(1 for _, verdict, _ in rows if verdict == "duplicate"),
        "other_verdicts": sum(1 for _, verdict, _ in rows if verdict not in ("accepted", "duplicate")),
    }


def intake_ms(endpoint_id: int) -> dict[str, float]:
    """The intake's own time per request (Delivery.duration_ms: endpoint lookup to the row)."""
    from webhooks.models import Delivery

    values = [
        v for v in Delivery.objects.filter(endpoint_id=endpoint_id).values_list("duration_ms", flat=True) if v
    ]
    if not values:
        return {}
    return {
        "intake_p50_ms": round(statistics.median(values), 2),
        "intake_p99_ms": round(common.percentile(values, 99), 2),
    }


def empty_tables() -> None:
    from scheduler.models import Attempt, Job, QueuePause, Run
    from webhooks.models import Delivery, Endpoint

    for model in (Delivery, Endpoint, Attempt, Run, QueuePause, Job):
        model.objects.all().delete()


def clear_rows(endpoint_id: int) -> None:
    from bench.bench_queue import drain_broker
    from scheduler.models import Run
    from webhooks.models import Delivery

    Delivery.objects.filter(endpoint_id=endpoint_id).delete()
    Run.objects.filter(trigger=Run.Trigger.WEBHOOK).delete()
    drain_broker()  # the runs' wake-up messages (no worker takes them)


# --- one phase at one rate ----------------------------------------------------------------------


class Target:
    """A web process under test: the intake (``checked``: the database is checked) or the bare view."""

    def __init__(
        self, name: str, procs: list[subprocess.Popen], url: str, secret: str, endpoint_id: int, checked: bool
    ) -> None:
        self.name, self.procs, self.port = name, procs, int(url.rsplit(":", 1)[1])
        self.secret, self.endpoint_id, self.checked = secret, endpoint_id, checked
        self.phases = 0

    def step(self, rate: float, seconds: float) -> dict[str, Any]:
        self.phases += 1
        deliveries = Deliveries(
            self.secret, rate, seconds, f"{self.name}{self.phases}-{secrets.token_hex(3)}"
        )
        cpu_before = sum(common.cpu_seconds(p.pid) for p in self.procs)
        load_before = os.getloadavg()[0]
        result = send_all(self.port, deliveries, rate, CLIENTS)
        result["server_cpu_ms_per_request"] = round(
            (sum(common.cpu_seconds(p.pid) for p in self.procs) - cpu_before) * 1000 / deliveries.total, 3
        )
        result["load_avg"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        records = result.pop("_records")
        problems: list[str] = []
        if self.checked:
            answers = check_answers(records)
            expected = {deliveries.delivery_id(n) for n in range(deliveries.count)}
            database = check_database(self.endpoint_id, expected, len(records))
            result.update(answers, **database, **intake_ms(self.endpoint_id))
            clear_rows(self.endpoint_id)
            for name in (
                "ids_answered_wrong",
                "lost",
                "duplicated",
                "requests_not_recorded",
                "other_verdicts",
            ):
                if result[name]:
                    problems.append(f"{name} {result[name]}")
            if result["answered_duplicate"] != deliveries.resends:  # a copy per resend (either one)
                problems.append(
                    f"{result['answered_duplicate']} answered duplicate, {deliveries.resends} resent"
                )
        else:
            result["errors"] = sum(1 for r in records if r[0] != "202")
        if result["errors"]:
            problems.append(f"errors {result['errors']} ({result['statuses']})")
        if result["p99_ms"] > TARGET_P99_MS:
            problems.append(f"p99 {result['p99_ms']} ms > {TARGET_P99_MS:g}")
        if result["answered_by_end_plus_1s"] < BACKLOG_SHARE * deliveries.total:
            problems.append(
                f"backlog: {result['answered_by_end_plus_1s']} of {deliveries.total} answered in time"
            )
        result["ok"] = not problems
        result["problems"] = problems
        # Kept up: everything but the p99 (which other load on a shared machine moves most).
        result["kept_up"] = all(p.startswith("p99 ") for p in problems) and result["p50_ms"] <= TARGET_P99_MS
        shown = {
            k: result[k]
            for k in ("rate_target", "p50_ms", "p99_ms", "server_cpu_ms_per_request", "ok", "kept_up")
        }
        print(f"  {self.name} {rate:g}/s × {seconds:g} s: {shown} {'; '.join(problems)}", flush=True)
        return result


def highest(target: Target, sustained: dict[str, Any], step_seconds: float) -> dict[str, Any]:
    """Rates × STEP_FACTOR up from RATE while they pass (down from it while they fail), then one
    bisection step between the last passing and the first failing rate."""
    steps = [sustained]
    passing = RATE if sustained["ok"] else None
    failing = None if sustained["ok"] else RATE
    rate = RATE
    while passing is None or failing is None:
        rate = rate * STEP_FACTOR if failing is None else rate / STEP_FACTOR
        rate = round(rate, -1) if rate >= 20 else round(rate, 1)
        if rate > MAX_RATE or rate < 1:
            break
        result = target.step(rate, step_seconds)
        steps.append(result)
        if result["ok"]:
            passing = rate if passing is None else max(passing, rate)
        else:
            failing = rate if failing is None else min(failing, rate)
    if passing is not None and failing is not None:
        middle = round(math.sqrt(passing * failing), -1)
        if passing < middle < failing:
            result = target.step(middle, step_seconds)
            steps.append(result)
            passing = middle if result["ok"] else passing
    return {
        "highest_verified_rate": passing,
        "first_failing_rate": failing if failing else None,
        # The highest step that kept up (all but the p99), of those run: a lower bound.
        "highest_rate_kept_up": max((s["rate_target"] for s in steps if s["kept_up"]), default=None),
        "steps": steps,
    }


def run() -> dict:
    common.setup("webhooks")
    from django.db import connection

    from scheduler.models import Job
    from webhooks.models import Endpoint

    seconds = float(os.environ.get("BENCH_WEBHOOKS_SECONDS", SECONDS))
    step_seconds = min(STEP_SECONDS, seconds)
    empty_tables()
    job = Job.objects.create(name=JOB, kind="noop", params={}, prompt_template="Review #{{ input.pr }}")
    secret = secrets.token_hex(20)
    endpoint = Endpoint(
        slug=SLUG,
        provider="github",
        secret=secret,
        events=["pull_request"],
        filters={"action": "opened"},
        branch="main",
        job=job,
        input_template=INPUT,
        rate_limit_per_minute=1_000_000,  # checked (one Redis call), never reached
    )
    endpoint.full_clean()
    endpoint.save()
    load_start = os.getloadavg()
    out: dict[str, Any] = {
        "database": connection.vendor,
        "web_processes": WEB_PROCESSES,
        "body_bytes": BODY_BYTES,
        "clients": CLIENTS,
    }
    env = common.server_env()
    with common.daphnes(env, WEB_PROCESSES, name="webhooks-daphne") as (procs, url):
        target = Target("intake", procs, url, secret, endpoint.pk, checked=True)
        target.step(RATE, min(5.0, seconds))  # warm-up: connections, templates, the ORM's caches
        sustained = target.step(RATE, seconds)
        out["intake"] = {"sustained": sustained, **highest(target, sustained, step_seconds)}
    bare_env = common.server_env(DJANGO_SETTINGS_MODULE="bench._bare_webhook_settings")
    with common.daphnes(bare_env, WEB_PROCESSES, name="webhooks-bare-daphne") as (procs, url):
        target = Target("bare", procs, url, secret, endpoint.pk, checked=False)
        target.step(RATE, min(5.0, seconds))
        bare_sustained = target.step(RATE, seconds)
        out["bare"] = {"sustained": bare_sustained, **highest(target, bare_sustained, step_seconds)}
    out["load_avg_start_end"] = [round(load_start[0], 2), round(os.getloadavg()[0], 2)]
    logs = ["webhooks-daphne", "webhooks-bare-daphne"]
    if WEB_PROCESSES > 1:
        logs = [f"{name}-{i}" for name in logs for i in range(WEB_PROCESSES)]
    out["server_exceptions"] = {}
    for log in logs:
        for message, n in common.app_exceptions(log).items():
            out["server_exceptions"][message] = out["server_exceptions"].get(message, 0) + n
    intake, bare = out["intake"], out["bare"]

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    out["ratios"] = {
        "highest_rate_intake_over_bare": ratio(
            intake["highest_verified_rate"], bare["highest_verified_rate"]
        ),
        "highest_kept_up_intake_over_bare": ratio(
            intake["highest_rate_kept_up"], bare["highest_rate_kept_up"]
        ),
        "p50_at_rate_intake_over_bare": ratio(sustained["p50_ms"], bare_sustained["p50_ms"]),
        "p99_at_rate_intake_over_bare": ratio(sustained["p99_ms"], bare_sustained["p99_ms"]),
        "server_cpu_per_request_intake_over_bare": ratio(
            sustained["server_cpu_ms_per_request"], bare_sustained["server_cpu_ms_per_request"]
        ),
    }
    print(
        f"  sustained {RATE:g}/s × {seconds:g} s: "
        f"intake p50 {sustained['p50_ms']} / p99 {sustained['p99_ms']} ms, "
        f"bare p50 {bare_sustained['p50_ms']} / p99 {bare_sustained['p99_ms']} ms; "
        f"lost {sustained['lost']}, duplicated {sustained['duplicated']}, "
        f"resends answered duplicate {sustained['resends_answered_duplicate']}/{sustained['resends']}",
        flush=True,
    )
    print(
        f"  highest verified rate: intake {intake['highest_verified_rate']}/s, "
        f"bare {bare['highest_verified_rate']}/s "
        f"(ratio {out['ratios']['highest_rate_intake_over_bare']}); highest kept up (all but the p99): "
        f"intake {intake['highest_rate_kept_up']}/s, bare {bare['highest_rate_kept_up']}/s; "
        f"ratios {out['ratios']}",
        flush=True,
    )
    out["targets"] = [
        {"name": f"ack p99 ms at {RATE:g}/s for {seconds:g} s", "value": sustained["p99_ms"],
         "target": f"<= {TARGET_P99_MS:g}", "ok": sustained["p99_ms"] <= TARGET_P99_MS},
        {"name": "lost deliveries", "value": sustained["lost"], "target": "0",
         "ok": sustained["lost"] == 0 and sustained["requests_not_recorded"] == 0},
        {"name": "duplicated runs (resends included)", "value": sustained["duplicated"], "target": "0",
         "ok": sustained["duplicated"] == 0 and sustained["ids_answered_wrong"] == 0
         and sustained["answered_duplicate"] == sustained["resends"]},
        {"name": "errors", "value": sustained["errors"], "target": "0", "ok": sustained["errors"] == 0},
        {"name": f"highest sustained verified rate /s ({WEB_PROCESSES} web process(es))",
         "value": intake["highest_verified_rate"], "target": "report", "ok": True},
        {"name": "highest rate kept up /s (all checks but the p99)", "value": intake["highest_rate_kept_up"],
         "target": "report", "ok": True},
        {"name": "intake / bare 202 view, highest rate",
         "value": out["ratios"]["highest_rate_intake_over_bare"], "target": "report", "ok": True},
    ]  # fmt: skip
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
