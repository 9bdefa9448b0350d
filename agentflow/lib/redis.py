"""The process's Redis connection pool (a pool, not shared state: every instance has its own),
and how pages tell that Redis is away."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver


@cache
def get_redis() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=2, health_check_interval=30
    )


@receiver(setting_changed)
def _new_pool_for_a_new_url(*, setting: str, **_kwargs: object) -> None:
    if setting == "REDIS_URL":  # tests (and only tests) change it at run time
        get_redis.cache_clear()


_batch = threading.local()


@contextmanager
def batched() -> Iterator[None]:
    """Fire-and-forget Redis writes made inside the block (the automation log's lines, the run
    metrics, the wheel position: whoever asks :func:`write_pipeline`) go out together in one
    round trip when the block ends, instead of one each (a queue worker made seven per no-op
    run). Nested blocks join the outermost. A failure at the end is logged, never raised: such
    writes are best effort by contract (their own callers never raise either)."""
    if getattr(_batch, "pipe", None) is not None:
        yield
        return
    pipe = get_redis().pipeline(transaction=False)
    _batch.pipe = pipe
    try:
        yield
    finally:
        _batch.pipe = None
        if len(pipe):
            try:
                pipe.execute()
            except Exception:
                logging.getLogger("agentflow.redis").warning(
                    "could not write %d batched Redis command(s) (Redis down?)", len(pipe), exc_info=True
                )


def write_pipeline() -> tuple[Any, bool]:
    """A pipeline for best-effort writes and whether the caller executes it: the open
    :func:`batched` block's (False: it goes out when the block ends), else a new one (True)."""
    pipe = getattr(_batch, "pipe", None)
    if pipe is not None:
        return pipe, False
    return get_redis().pipeline(transaction=False), True


def key(*parts: object) -> str:
    """A namespaced key, so several AgentFlow installs can share one Redis."""
    return ":".join([settings.REDIS_PREFIX, *map(str, parts)])


def redacted_url(url: str | None = None) -> str:
    """``REDIS_URL`` fit to show: scheme, host, port and database, never a user name or password."""
    url = settings.REDIS_URL if url is None else url
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "(unparseable REDIS_URL)"
    netloc = f"[{host}]" if ":" in host else host
    if port:
        netloc += f":{port}"
    if parts.password or parts.username:
        netloc = "***@" + netloc
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


FAILURE_HOOKS: list[Callable[[str], None]] = []  # told when Redis does not answer (the stop's condition)


def report_failure(problem: str) -> None:
    """Tell the registered hooks that Redis did not answer (never raises)."""
    for hook in FAILURE_HOOKS:
        try:
            hook(problem)
        except Exception:  # a hook's failure is its own
            logging.getLogger("agentflow.redis").exception("a Redis failure hook failed")


def redis_problem() -> str | None:
    """None when Redis answers a PING, else why not (``ConnectionError: ...``), with no secret in it."""
    try:
        get_redis().ping()
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        password = urlsplit(settings.REDIS_URL).password
        reason = reason.replace(password, "***") if password else reason
        report_failure(reason)
        return reason
    return None
