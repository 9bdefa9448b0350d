"""Resilience of agent runs (issue 9 §7): what a restarting gateway answers is classified so the
engine retries it. The kill -9 and gateway-restart scenarios with real workers are not here yet
(not reliable on a loaded 2-core machine in the time; see the h-resil report)."""

from __future__ import annotations

from fleet import run_errors
from openclaw import GatewayError
from scheduler import errors

DRAINING = "Gateway is draining; new tasks are not accepted"


def test_a_draining_gateway_refusal_is_unreachable_and_retried():
    """What a restarting gateway answers to work it will not run (found by a gateway-restart run
    with agent runs in flight, where such runs failed as ``system``, final): never started, so
    retried by the policy."""
    assert run_errors.classify({"state": "error", "errorMessage": DRAINING}).error_class == errors.UNREACHABLE
    assert run_errors.classify(GatewayError(DRAINING, code="UNAVAILABLE")).error_class == errors.UNREACHABLE
    assert errors.UNREACHABLE in errors.RETRYABLE
