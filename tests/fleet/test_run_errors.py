"""Classifying what the gateway reports: over the captured frames, and end to end through the real gateway."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from pathlib import Path
from typing import Any

import pytest

from demo.gateway import DEFAULT_AGENTS, DemoAgent, DemoGateway, ensure_installed
from fleet import run_errors
from fleet.run_errors import ErrorInfo, classify, outcome, parse_retry_after
from openclaw import GatewayClient
from openclaw.errors import (
    AuthError,
    ConnectionLostError,
    GatewayError,
    GatewayTimeout,
    InvalidRequestError,
    UnavailableError,
)
from tests.support.ports import closed_url, free_port_block

AUTOMATION = Path(__file__).resolve().parents[1] / "fixtures" / "frames" / "automation"


def _capture(name: str) -> dict[str, Any]:
    return json.loads((AUTOMATION / f"{name}.json").read_text())


# ---------------------------------------------------------------------------------------------------------
# Over the captured frames
# ---------------------------------------------------------------------------------------------------------

CAPTURED = [
    # fixture, class, Retry-After seconds
    ("e429-noRA-fast", "rate_limit", None),
    ("e429-RA30-fast", "rate_limit", 30.0),
    ("e429-noRA-default", "rate_limit", None),
    ("e500-fast", "server_error", None),
    ("e500-default", "server_error", None),
    ("e401-fast", "provider_auth", None),
    ("e401-default", "provider_auth", None),
    ("e401-after-fast", "provider_auth", 60.0),  # "Retry after about 1 minute"
    ("hang-timeoutMs-fast", "timeout", None),
    ("stall-timeoutMs-fast", "timeout", None),
    ("slow-timeoutMs-fast", "timeout", None),
    ("aborted-fast", "aborted", None),
]


@pytest.mark.parametrize(("name", "error_class", "retry_after"), CAPTURED, ids=[c[0] for c in CAPTURED])
def test_the_first_terminal_event_of_each_captured_fault_gets_its_class(name, error_class, retry_after):
    capture = _capture(name)
    first = capture["terminal_events"][0]
    info = classify(first)
    assert info is not None
    assert info.error_class == error_class, info
    assert info.retry_after_seconds == retry_after
    assert info.message
    assert outcome(first) == ("aborted" if error_class == "aborted" else "failed")


@pytest.mark.parametrize(("name", "error_class", "_ra"), CAPTURED, ids=[c[0] for c in CAPTURED])
def test_the_detail_less_second_terminal_event_and_the_agent_lifecycle_agree(name, error_class, _ra):
    capture = _capture(name)
    for later in capture["terminal_events"][1:]:
        assert classify(later).error_class == error_class, later
    lifecycle = [
        e
        for e in capture["events"]
        if e["event"] == "agent"
        and e["payload"].get("stream") == "lifecycle"
        and e["payload"]["data"].get("phase") in ("error", "end")
    ]
    assert lifecycle, "every captured run ends with an agent lifecycle error/end"
    assert classify(lifecycle[-1]).error_class == error_class


def test_provider_and_model_come_from_the_error_detail_or_the_text():
    info = classify(_capture("e500-fast")["terminal_events"][0])
    assert (info.provider, info.model) == ("stub", "stub-model")
    after_401 = classify(_capture("e401-after-fast")["terminal_events"][0])
    assert after_401.provider == "stub"


@pytest.mark.parametrize("name", ["ok", "fallback-e500-fast", "fallback-e429-RA120-default", "slow-fast"])
def test_a_final_with_a_message_is_a_success_not_an_error(name):
    first = _capture(name)["terminal_events"][0]
    assert classify(first) is None
    assert outcome(first) == "succeeded"


def test_a_bare_final_on_a_busy_session_means_absorbed():
    first = _capture("absorbed-busy-session-fast")["terminal_events"][0]
    assert classify(first) is None
    assert outcome(first) == "absorbed"


@pytest.mark.parametrize(
    ("exc", "error_class"),
    [
        (ConnectionLostError("connection refused at ws://127.0.0.1:1/"), "unreachable"),
        (UnavailableError("starting", retry_after_ms=2000), "unreachable"),
        (ConnectionRefusedError(111, "Connection refused"), "unreachable"),
        (GatewayTimeout("chat.send took longer than 10.0 s"), "timeout"),
        (TimeoutError(), "timeout"),
        (InvalidRequestError("invalid chat.send params", code="INVALID_REQUEST"), "invalid_request"),
        (AuthError("unauthorized", code="UNAUTHORIZED"), "system"),
        (GatewayError("something odd"), "system"),
        (ValueError("bug"), "system"),
    ],
)
def test_client_exceptions_get_a_class(exc, error_class):
    info = classify(exc)
    assert info.error_class == error_class
    assert info.error_class in run_errors.ERROR_CLASSES


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("⚠️ Rate limit reached. Please try again later.; Retry-After: 5 seconds", 5.0),
        ("Retry-After: 1500 ms", 1.5),
        ("Retry after about 1 minute, or switch to a different auth profile", 60.0),
        ("please try again in 20 seconds", 20.0),
        ("⚠️ API rate limit reached. Please try again later.", None),
        ("", None),
    ],
)
def test_it_reads_retry_after_from_the_message_text(text, seconds):
    assert parse_retry_after(text) == seconds


def test_odd_input_is_no_error_rather_than_a_crash():
    assert classify({}) is None
    assert classify({"state": "delta"}) is None
    assert classify("not an event") is None
    assert classify({"state": "error"}) == ErrorInfo(
        "system", "the gateway reported an error without a message"
    )


# ---------------------------------------------------------------------------------------------------------
# End to end: the stub's fault -> the real gateway -> the terminal event -> classify
# ---------------------------------------------------------------------------------------------------------

# The shared session gateway keeps the default retries (minutes per fault) and a 401 disables the provider
# for its agent for a minute, so these tests run their own gateway with retries off on dedicated agents.
E2E_AGENTS = (
    *DEFAULT_AGENTS,
    DemoAgent("faults", "Faults", "Faults", "💥", provider_max_retries=0),
    DemoAgent("authfail", "Auth Fail", "Auth Fail", "🔒", provider_max_retries=0),
    DemoAgent(
        "fb",
        "Failover",
        "Failover",
        "🔀",
        model="stub/stub-fail-error",
        fallbacks=("stub/stub-fallback",),
        provider_max_retries=0,
    ),
)


@pytest.fixture(scope="module")
def fault_gateway(tmp_path_factory):
    ensure_installed()
    gateway = DemoGateway(
        tmp_path_factory.mktemp("fault-gw"), free_port_block(), secrets.token_hex(16), agents=E2E_AGENTS
    )
    gateway.start(timeout=120)
    yield gateway
    gateway.stop()


async def _run(gateway: DemoGateway, agent: str, message: str, **send: Any) -> tuple[dict, int]:
    """chat.send on a fresh session; return the first terminal chat event and the model calls it took."""
    client = GatewayClient(gateway.url, gateway.token, request_timeout=30.0)
    await client.connect()
    run_id = str(uuid.uuid4())
    nonce = uuid.uuid4().hex[:10]
    session_key = f"agent:{agent}:e2e-{nonce}"
    terminal: asyncio.Future[dict] = asyncio.get_running_loop().create_future()

    def on_chat(event):
        payload = event.payload
        if (
            isinstance(payload, dict)
            and payload.get("runId") == run_id
            and payload.get("state") in ("final", "error", "aborted")
            and not terminal.done()
        ):
            terminal.set_result(payload)

    client.on("chat", on_chat)
    abort_after = send.pop("abort_after", None)
    try:
        ack = await client.chat_send(session_key, f"{message} {nonce}", idempotency_key=run_id, **send)
        assert ack["runId"] == run_id
        if abort_after is not None:
            await asyncio.sleep(abort_after)
            await client.chat_abort(session_key, run_id=run_id)
        payload = await asyncio.wait_for(terminal, timeout=120)
    finally:
        await client.close()
    calls = [a for a in gateway.stub_server.arrivals() if nonce in a.text]
    return payload, len(calls)


@pytest.mark.gateway
@pytest.mark.parametrize(
    ("agent", "message", "send", "error_class", "retry_after"),
    [
        ("faults", "[[ratelimit:none]] hi", {}, "rate_limit", None),
        ("faults", "[[ratelimit:30]] hi", {}, "rate_limit", 30.0),
        ("faults", "[[error]] hi", {}, "server_error", None),
        ("authfail", "[[auth]] hi", {}, "provider_auth", None),
        ("faults", "[[hang:30]] hi", {"timeoutMs": 3000}, "timeout", None),
        ("faults", "[[stall:30]] hi", {"timeoutMs": 3000}, "timeout", None),
    ],
    ids=["429", "429-retry-after", "500", "401", "no-response", "stalled-stream"],
)
async def test_each_provider_fault_reaches_us_as_its_class(
    fault_gateway, agent, message, send, error_class, retry_after
):
    payload, calls = await _run(fault_gateway, agent, message, **send)
    info = classify(payload)
    assert info is not None, payload
    assert info.error_class == error_class, payload
    assert info.retry_after_seconds == retry_after
    assert calls == 1  # retries are off for these agents: the gateway reports the first failure


@pytest.mark.gateway
async def test_an_aborted_run_is_aborted(fault_gateway):
    payload, _ = await _run(fault_gateway, "faults", "[[slow]] " + "w " * 40, abort_after=1.0)
    assert classify(payload).error_class == "aborted"
    assert outcome(payload) == "aborted"


@pytest.mark.gateway
async def test_a_failing_primary_falls_back_to_the_model_that_never_fails(fault_gateway):
    payload, calls = await _run(fault_gateway, "fb", "hello")
    assert classify(payload) is None
    assert outcome(payload) == "succeeded"
    assert payload["message"]["content"][0]["text"].startswith("[stub:stub-fallback] You said: hello")
    assert calls == 2  # stub-fail-error once, then stub-fallback


@pytest.mark.gateway
async def test_an_invalid_request_is_invalid_request(fault_gateway):
    client = GatewayClient(fault_gateway.url, fault_gateway.token)
    await client.connect()
    try:
        with pytest.raises(GatewayError) as caught:
            await client.call("chat.send", {"sessionKey": "agent:faults:x", "message": "no idempotency key"})
    finally:
        await client.close()
    assert classify(caught.value).error_class == "invalid_request"


@pytest.mark.gateway
async def test_a_gateway_that_does_not_answer_is_unreachable():
    client = GatewayClient(closed_url(), "token", connect_timeout=2.0)
    with pytest.raises(GatewayError) as caught:
        await client.connect()
    assert classify(caught.value).error_class == "unreachable"


@pytest.mark.gateway
async def test_a_wrong_gateway_token_is_a_system_error_not_a_provider_one(fault_gateway):
    client = GatewayClient(fault_gateway.url, "wrong-token")
    with pytest.raises(GatewayError) as caught:
        await client.connect()
    await client.close()
    assert classify(caught.value).error_class == "system"


RACED = "SessionMutationAuthorizationChangedError: session changed before chat.send; retry the request"


def test_a_send_the_gateway_refused_asking_for_a_retry_is_a_retryable_server_error():
    """Seen from the real gateway (demo traffic on one session): nothing ran, so send again."""
    raced = InvalidRequestError(RACED, method="chat.send")
    assert raced.asks_for_retry
    assert classify(raced).error_class == "server_error"
    assert not InvalidRequestError("invalid chat.send params: message required").asks_for_retry
    assert classify(InvalidRequestError("invalid params")).error_class == "invalid_request"
