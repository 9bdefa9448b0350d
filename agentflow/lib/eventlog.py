"""The automation log: structured events of runs and triggers in one bounded Redis stream.

``emit(event, **fields)`` appends ``{"ts", "event", **fields}`` (JSON) to the stream
``<prefix>:events`` with ``XADD … MAXLEN ~ AGENTFLOW_EVENT_LOG_MAX`` (10,000 by default: the
oldest go first). It never raises: a Redis that is down loses the line, not the caller's work.
``read(...)`` returns the newest entries, ``follow(...)`` blocks for the next ones
(``manage.py automation logs [--job …] [--follow]``).

Who writes (scheduler/README.md, "The automation log"): the engine (``run.queued``,
``run.started``, ``run.finished``), the result actions (``result.delivered`` / ``result.failed``)
and the trigger kinds (``trigger.fired``, …: one line per fire, delivery or file batch).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from django.conf import settings

from .redis import get_redis, key, write_pipeline

log = logging.getLogger("agentflow.eventlog")


def stream_key() -> str:
    return key("events")


def _fields(event: str, fields: Mapping[str, Any]) -> dict[str, str]:
    line = {
        "ts": round(time.time(), 3),
        "event": event,
        **{k: v for k, v in fields.items() if v not in (None, "")},
    }
    return {"data": json.dumps(line, default=str, separators=(",", ":"))}


def line(event: str, fields: Mapping[str, Any]) -> str:
    """One event as the stream stores it (its ``data`` field), for a caller that appends it in
    its own script (scheduler/stops.py: a worker's stop check and its ``run.started`` line in
    one round trip)."""
    return _fields(event, fields)["data"]


def emit(event: str, **fields: Any) -> None:
    """Append one event (never raises)."""
    emit_many([(event, fields)])


def emit_many(events: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """Append several events in one round trip (never raises)."""
    if not events:
        return
    try:
        pipe, execute = write_pipeline()  # inside redis.batched(): sent when the block ends
        for event, fields in events:
            pipe.xadd(
                stream_key(),
                _fields(event, fields),
                maxlen=settings.AGENTFLOW_EVENT_LOG_MAX,
                approximate=True,
            )
        if execute:
            pipe.execute()
    except Exception:
        log.warning("could not write %d automation log event(s) (Redis down?)", len(events), exc_info=True)


def _decode(entry_id: Any, raw: Any) -> dict[str, Any] | None:
    try:
        line = json.loads(raw[b"data"])
    except (KeyError, ValueError, TypeError):
        return None
    if not isinstance(line, dict):
        return None
    line["id"] = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return line


def matches(line: Mapping[str, Any], job: str = "", run: int | None = None) -> bool:
    if job and line.get("job") != job:
        return False
    return not (run is not None and line.get("run_id") != run)


def read(
    count: int = 100, *, job: str = "", run: int | None = None, scan: int = 5000
) -> list[dict[str, Any]]:
    """The newest ``count`` events (oldest first), optionally of one job or run; looks at most
    ``scan`` entries back."""
    redis: Any = get_redis()
    raw = redis.xrevrange(stream_key(), count=scan if (job or run is not None) else count)
    lines = []
    for entry_id, fields in raw:
        line = _decode(entry_id, fields)
        if line is not None and matches(line, job, run):
            lines.append(line)
            if len(lines) >= count:
                break
    return list(reversed(lines))


def follow(
    after: str = "$", *, job: str = "", run: int | None = None, block_ms: int = 1000
) -> Iterator[dict[str, Any] | None]:
    """Yield events written after ``after`` as they come (``None`` after each quiet
    ``block_ms``, so a caller can stop)."""
    redis: Any = get_redis()
    last = after
    while True:
        answer = redis.xread({stream_key(): last}, block=block_ms, count=100)
        if not answer:
            yield None
            continue
        for entry_id, fields in answer[0][1]:
            last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            line = _decode(entry_id, fields)
            if line is not None and matches(line, job, run):
                yield line


def last_id() -> str:
    """The newest entry's id ("0-0" when the stream is empty): where a follow starts."""
    redis: Any = get_redis()
    newest = redis.xrevrange(stream_key(), count=1)
    if not newest:
        return "0-0"
    entry_id = newest[0][0]
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def format_line(line: Mapping[str, Any]) -> str:
    """``2026-12-02 09:00:01 run.finished run_id=12 job=morning_report status=succeeded``."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(line.get("ts") or 0)))
    rest = " ".join(f"{k}={_shown(v)}" for k, v in line.items() if k not in ("ts", "event", "id"))
    return f"{when} {line.get('event', '?')} {rest}".rstrip()


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = text.replace("\n", " ")
    if len(text) > 200:
        text = text[:199] + "…"
    return f'"{text}"' if " " in text else text
