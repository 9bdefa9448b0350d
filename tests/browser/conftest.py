"""Browser tests: a real Daphne serving the test database, driven by Playwright in Debian's
Chromium (no browser download). Screenshots go to test-artifacts/."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.daphne import DaphneServer, live_env

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("AGENTFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
def server_env(transactional_db) -> dict[str, str]:
    return live_env()


@pytest.fixture
def daphne(server_env, tmp_path) -> DaphneServer:
    """The test's Daphne (the one behind ``live_server_url``), for tests that restart it."""
    server = DaphneServer(server_env, tmp_path / "daphne.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def live_server_url(daphne):
    """Daphne on a free loopback port, serving the test database."""
    return daphne.url


@pytest.fixture
def gateway_listener(server_env, gateway_row, tmp_path):
    """``manage.py run_gateway_listener --refresh 1`` beside the server (same database and Redis),
    started once the gateway row exists; returns when it has connected to the real gateway."""
    from django.utils import timezone

    from agentflow.lib.redis import get_redis
    from fleet.models import Gateway

    started = timezone.now()
    log_path = tmp_path / "listener.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "run_gateway_listener", "--refresh", "1"],
        cwd=ROOT,
        env=server_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            gateway = Gateway.objects.get(pk=gateway_row.pk)
            connected_at = gateway.last_connected_at or started
            if gateway.status == Gateway.Status.CONNECTED and connected_at > started:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                log_tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the listener did not connect: {log_tail}")
            time.sleep(0.2)
        time.sleep(0.5)  # on_connect goes on with sessions.subscribe after marking the row connected
        gateway_row.refresh_from_db()
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
        # Its on_connected queued reconciliation batches for a Celery worker tests never run.
        queue = server_env["AGENTFLOW_REDIS_PREFIX"]
        get_redis().delete(queue, f"_kombu.binding.{queue}")


@pytest.fixture
def chromium():
    """Chromium per test: Playwright's sync API runs an event loop in this thread while it is
    open, which would break every async test that ran after a session-scoped browser."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: run bin/ensure-chromium (make test does)")
    # With that loop running, Django refuses ORM calls from the (synchronous) test code.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def page(chromium):
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield page
    context.close()
