"""The bare Celery task bench_queue compares the engine with (loaded in the workers with -I)."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="bench.bare_noop", ignore_result=True)
def bare_noop() -> None:
    from agentflow.lib.redis import get_redis, key

    get_redis().incr(key("bench", "bare"))
