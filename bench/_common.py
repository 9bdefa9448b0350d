"""Shared plumbing for the issue-4 benchmarks: Django on the bench SQLite (bench_batches'
setup_django), a bench-specific Redis prefix, subprocesses (Daphne, helpers) on loopback with the
same database and Redis prefix, percentiles and /proc readings."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import ProxyHandler, build_opener

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "var" / "bench-logs"
# urllib honours *_proxy variables; loopback requests must never go through a proxy.
_OPENER = build_opener(ProxyHandler({}))


def setup(name: str) -> None:
    """Django on a fresh bench database, Redis keys under ``agentflow-bench-<name>``.

    When several benchmarks run in one process the first one's database and prefix are kept
    (settings are read once); each benchmark clears its own rows and Redis keys anyway."""
    from django.apps import apps

    if not apps.ready:
        os.environ["AGENTFLOW_REDIS_PREFIX"] = f"agentflow-bench-{name}"
        os.environ["DEBUG"] = "false"  # measure what production runs, not the debug query log
        from bench.bench_batches import setup_django

        setup_django()
    from django.conf import settings

    settings.DEBUG = False
    import logging

    logging.getLogger("agentflow").setLevel(logging.WARNING)
    clear_redis()


def clear_redis() -> None:
    from django.conf import settings

    from agentflow.lib.redis import get_redis

    client = get_redis()
    for k in client.scan_iter(f"{settings.REDIS_PREFIX}:*", count=1000):
        client.delete(k)
    # Tasks the gateway listener queued for a Celery worker the benchmarks never run.
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    client.delete(queue, f"_kombu.binding.{queue}")


def server_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess that must see this process's database and Redis prefix."""
    from django.conf import settings

    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_VERSION", "DATABASE_URL")}
    env.update(
        AGENTFLOW_DATA_DIR=str(settings.DATA_DIR),
        AGENTFLOW_REDIS_PREFIX=settings.REDIS_PREFIX,
        REDIS_URL=settings.REDIS_URL,
        DJANGO_SETTINGS_MODULE="agentflow.settings",
        DEBUG="false",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(ROOT),
    )
    if os.environ.get("BENCH_DATABASE_URL"):
        env["DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return response.status, response.read()
    except HTTPError as exc:
        return exc.code, exc.read()


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def log_path(name: str) -> Path:
    LOGS.mkdir(parents=True, exist_ok=True)
    return LOGS / f"{name}.log"


@contextlib.contextmanager
def daphne(
    env: dict[str, str], name: str = "daphne", timeout: float = 30.0, app: str = "agentflow.asgi:application"
) -> Iterator[tuple[subprocess.Popen, str]]:
    """Daphne serving ``app`` on a free loopback port; yields (process, base URL)."""
    port = free_port()
    path = log_path(name)
    with path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                app,
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    http_get(f"{url}/healthz", timeout=2)  # any answer, even 503 "degraded", means up
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"daphne did not start: {path.read_text()[-2000:]}") from None
                    time.sleep(0.2)
            yield proc, url
        finally:
            stop(proc)


@contextlib.contextmanager
def daphnes(
    env: dict[str, str], processes: int, name: str = "daphne", timeout: float = 30.0
) -> Iterator[tuple[list[subprocess.Popen], str]]:
    """``processes`` Daphne processes accepting on one listening socket on a free loopback port
    (``daphne --fd``: each adopts the socket this process bound, as under supervisord's
    ``fcgi-program`` or systemd socket activation); the kernel spreads the connections. One
    process is :func:`daphne` itself. Yields (processes, base URL)."""
    if processes <= 1:
        with daphne(env, name, timeout) as (proc, url):
            yield [proc], url
        return
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    port, fd = listener.getsockname()[1], listener.fileno()
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        for i in range(processes):
            log = log_path(f"{name}-{i}").open("wb")
            logs.append(log)
            command = [sys.executable, "-m", "daphne", "--fd", str(fd), "agentflow.asgi:application"]
            procs.append(
                subprocess.Popen(
                    command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, pass_fds=(fd,)
                )
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                http_get(f"{url}/healthz", timeout=2)
                break
            except OSError:
                if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"daphne --fd did not start: {log_path(f'{name}-0').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.2)
        time.sleep(1.0)  # the others finish starting (the first answered /healthz)
        yield procs, url
    finally:
        for proc in procs:
            stop(proc)
        for log in logs:
            log.close()
        listener.close()


def app_exceptions(name: str) -> dict[str, int]:
    """Daphne's "Exception inside application: ..." lines in a subprocess log, counted by message."""
    counts: dict[str, int] = {}
    for line in log_path(name).read_text(errors="replace").splitlines():
        if "Exception inside application:" in line:
            message = line.split("Exception inside application:", 1)[1].strip()[:120]
            counts[message] = counts.get(message, 0) + 1
    return counts


def ws_dropped(base_url: str) -> float | None:
    """agentflow_ws_dropped_total from GET /metrics."""
    status, body = http_get(f"{base_url}/metrics")
    match = re.search(rb"^agentflow_ws_dropped_total (\S+)$", body, re.M)
    return float(match.group(1)) if status == 200 and match else None


def login_cookie(username: str = "bench") -> str:
    """A logged-in session in the bench database; returns the sessionid cookie value."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    user, _ = get_user_model().objects.get_or_create(username=username, defaults={"is_staff": True})
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of an unsorted list (same convention as bench_gateway)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")
