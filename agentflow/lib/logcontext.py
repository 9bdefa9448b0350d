"""Structured logs (structlog) for every logger of the process, and the run context they carry.

``logging_config(fmt, level)`` is the ``LOGGING`` dict of settings: one handler whose
``structlog.stdlib.ProcessorFormatter`` renders every record (Django, Celery, Daphne, ours, and
structlog's own loggers) as one JSON object per line (``fmt="json"``, production) or as a
readable ``key=value`` line (``fmt="console"``, development and tests). Both merge structlog's
context variables into each line, so a standard ``logging.getLogger(...)`` call made inside
``bind_run(...)`` carries the run's fields without passing them::

    with bind_run(run_id=run.pk, job=job.name, attempt=attempt.pk, gateway=gw.name, agent=agent):
        log.info("sent")   # {"event": "sent", "run_id": 7, "job": "...", "attempt": "...", ...}

Context variables follow the code into ``asyncio`` tasks started inside the block and stop at
its end (also on an exception); nested blocks add or override fields and restore them on exit.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import structlog

FORMATS = ("json", "console")


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),  # logging's extra={...} becomes fields too
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def formatter(fmt: str) -> logging.Formatter:
    """The formatter of ``logging_config``: JSON lines or readable key=value lines."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: use one of {', '.join(FORMATS)}")
    renderer: Any
    if fmt == "json":
        final: list[Any] = [structlog.processors.format_exc_info]
        renderer = structlog.processors.JSONRenderer(default=str)
    else:
        final = []
        # Plain tracebacks: the rich formatter would print local variables (tokens, keys).
        renderer = structlog.dev.ConsoleRenderer(
            colors=False, pad_event_to=0, exception_formatter=structlog.dev.plain_traceback
        )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final, renderer],
    )


def configure_structlog() -> None:
    """Send structlog's own loggers (``structlog.get_logger()``) through the stdlib handlers, so
    they are rendered by the same formatter as everything else. Idempotent."""
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def logging_config(fmt: str, level: str) -> dict[str, Any]:
    """The ``LOGGING`` dict of settings (``dictConfig`` schema) with the structlog formatter."""
    formatter(fmt)  # a bad format is refused here, at settings time
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {"()": "agentflow.lib.logcontext.formatter", "fmt": fmt},
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django": {"level": "INFO"},
            "websockets": {"level": "WARNING"},
            "daphne": {"level": "WARNING"},
        },
    }


@contextlib.contextmanager
def bind_run(
    *,
    run_id: object,
    job: object = None,
    attempt: object = None,
    gateway: object = None,
    agent: object = None,
) -> Iterator[None]:
    """Every line logged inside the block (any logger, this thread or task) carries these
    fields. ``None`` fields are left out rather than logged as null."""
    fields = {"run_id": run_id, "job": job, "attempt": attempt, "gateway": gateway, "agent": agent}
    with structlog.contextvars.bound_contextvars(**{k: v for k, v in fields.items() if v is not None}):
        yield


def bound() -> dict[str, Any]:
    """The fields bound here now (for a task that hands its context to another thread)."""
    return structlog.contextvars.get_contextvars()
