"""The gateway side of the emergency stop (fleet/emergency.py) against the real gateway: a run
streaming on the gateway is aborted there, another active session (not AgentFlow's) is aborted
too, the gateway's own cron is switched off and restored to exactly what it was, and a token
without operator.admin leaves the cron alone with the reason saved."""

from __future__ import annotations

import time
import uuid

import pytest

from scheduler import audit, queue, stops
from scheduler.models import AuditEntry, Run
from tests.support.factories import make_agent
from tests.support.gateway import admin_client, wait_for
from tests.support.listening import listening

pytestmark = [pytest.mark.gateway, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

SYSTEM = audit.Actor.system()
ADMIN = ("operator.read", "operator.write", "operator.admin")


def cron_of(client) -> tuple[bool, object]:
    parsed = client.config_get().get("parsed") or {}
    cron = parsed.get("cron") if isinstance(parsed.get("cron"), dict) else {}
    return "enabled" in cron, cron.get("enabled")


def describe(client, key: str) -> dict:
    return client.call("sessions.describe", {"key": key}).get("session") or {}


@pytest.fixture
def gw(gateway_row, redis_prefix):
    make_agent(gateway_row, "main", model="stub/stub-model")
    return gateway_row


def streaming_run(gw) -> Run:
    run = queue.enqueue(
        kind="agent.prompt",
        params={"gateway": gw.name, "agent": "main"},
        prompt=f"[[slow:30]] stop-{uuid.uuid4().hex[:8]}",
        max_attempts=1,
    )
    assert queue.start_next("test-host:1").pk == run.pk
    attempt = run.attempt_set.get()
    assert attempt.session_key, "the run was sent"
    return run


def test_a_global_stop_aborts_on_the_gateway_switches_its_cron_off_and_release_restores_it(
    gw, live_openclaw, settings
):
    settings.GATEWAY_SCOPES = ADMIN
    with admin_client(live_openclaw) as client:
        before = cron_of(client)
        external = f"agent:main:external-{uuid.uuid4().hex[:8]}"
        client.chat_send(external, "[[slow:30]] not agentflow's", idempotency_key=str(uuid.uuid4()))
        with listening():
            run = streaming_run(gw)
            key = run.attempt_set.get().session_key
            wait_for(
                lambda: describe(client, key).get("status") == "running",
                90,
                what="the run active on the gateway",
            )
            wait_for(
                lambda: describe(client, external).get("status") == "running",
                90,
                what="the external run active",
            )
            started = time.monotonic()
            stop = stops.engage(SYSTEM, "global", reason="test: runaway")
            took = time.monotonic() - started
            run.refresh_from_db()
            assert (run.status, run.stop_id) == ("aborted", stop.pk)
            state = stop.saved_state["fleet"][gw.name]
            assert state["chat_aborts"] == 1 and state["session_aborts"] >= 1, state
            assert state["cron_changed"] is True and not state["errors"], state
            assert took < 5, f"engage took {took:.1f} s"
            # On the gateway: both ended (not running on), the cron is off.
            wait_for(
                lambda: describe(client, key).get("status") != "running",
                10,
                what="the run ended on the gateway",
            )
            wait_for(
                lambda: describe(client, external).get("status") != "running",
                10,
                what="the external run ended",
            )
            assert describe(client, key).get("abortedLastRun") is True
            assert cron_of(client) == (True, False)
        (released,) = stops.release(SYSTEM, stop_id=stop.pk, reason="test: fixed")
        assert cron_of(client) == before  # exactly what it was (a missing key stays missing)
        assert "cron restored" in AuditEntry.objects.get(action="stop.release").message
        assert not released.is_engaged


def test_without_operator_admin_the_cron_is_left_alone_and_the_reason_saved(gw, live_openclaw, settings):
    settings.GATEWAY_SCOPES = ("operator.read", "operator.write")
    with admin_client(live_openclaw) as client:
        before = cron_of(client)
        with listening():
            run = streaming_run(gw)
            stop = stops.engage(SYSTEM, "gateway", gw.name, reason="test: gateway stop")
        run.refresh_from_db()
        assert run.status == "aborted"
        state = stop.saved_state["fleet"][gw.name]
        assert state["chat_aborts"] == 1 and state["cron_changed"] is False
        assert "lacks operator.admin" in state["cron_note"]
        assert any("lacks operator.admin" in s["note"] for s in stop.steps)
        assert cron_of(client) == before
        stops.release(SYSTEM, stop_id=stop.pk, reason="done")
        assert cron_of(client) == before
