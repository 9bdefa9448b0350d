"""The live indicator tells the truth when Redis dies, and the page recovers by itself when it
returns: Chromium ↔ Daphne ↔ a private redis-server that the test kills and starts again."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.support.browser import login, screenshot
from tests.support.redis import private_redis

pytestmark = [pytest.mark.browser, pytest.mark.redis]

HEARTBEAT = 1  # seconds (AGENTFLOW_WS_HEARTBEAT for this Daphne)


@pytest.fixture
def redis_server(settings, tmp_path):
    with private_redis(settings, tmp_path) as server:
        yield server


@pytest.fixture
def server_env(redis_server, server_env):
    """The browser tests' Daphne environment, on the private Redis with a fast heartbeat."""
    return {**server_env, "REDIS_URL": redis_server.url, "AGENTFLOW_WS_HEARTBEAT": str(HEARTBEAT)}


def test_the_indicator_leaves_live_when_redis_dies_and_comes_back_with_it(
    redis_server, live_server_url, operator, page
):
    label = page.locator("#live-status .label")
    login(page, live_server_url, "operator", "operator-pass")
    expect(label).to_have_text("Live", timeout=10_000)
    expect(page.locator("#live-unavailable")).to_have_count(0)

    redis_server.kill()
    # Within a few heartbeats the open page says so (it used to keep saying "Live").
    expect(label).not_to_have_text("Live", timeout=HEARTBEAT * 1000 * 3 + 2000)
    expect(label).to_have_text(re.compile("live updates are unavailable"), timeout=5_000)

    page.reload()  # a page rendered now says why, and never claims "Live"
    expect(page.locator("#live-unavailable")).to_contain_text(
        f"Live updates are unavailable: Redis at redis://127.0.0.1:{redis_server.port}/0 does not answer"
    )
    page.wait_for_timeout(1500)
    expect(label).not_to_have_text("Live")
    screenshot(page, "redis-down-overview")

    redis_server.start()
    expect(label).to_have_text("Live", timeout=30_000)  # its own reconnect, no reload
    expect(page.locator("#live-unavailable")).to_have_count(0)
