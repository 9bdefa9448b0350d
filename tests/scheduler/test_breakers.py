"""scheduler.breakers: per gateway × provider circuit breakers in real Redis, shared by every
process: open after 5 consecutive failures, refuse while open, one probe, close or re-open."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from scheduler import breakers
from tests.support.pyprocs import answer, start_python

pytestmark = pytest.mark.redis

OPEN_SECONDS = 0.5


@pytest.fixture(autouse=True)
def short_breakers(settings):
    settings.AGENTFLOW_BREAKER_FAILURES = 5
    settings.AGENTFLOW_BREAKER_OPEN_SECONDS = OPEN_SECONDS
    settings.AGENTFLOW_BREAKER_PROBE_SECONDS = 30


def fail(times: int, gateway: str = "gw", provider: str = "openai") -> str:
    state = ""
    for _ in range(times):
        state = breakers.record_failure(gateway, provider)
    return state


def wait_out_open_time() -> None:
    time.sleep(OPEN_SECONDS + 0.05)


def test_it_opens_after_five_consecutive_failures_and_refuses_while_open(redis_prefix):
    assert fail(4) == breakers.CLOSED
    assert breakers.allow("gw", "openai")
    assert fail(1) == breakers.OPEN
    decision = breakers.check("gw", "openai")
    assert (decision.allowed, decision.state, decision.probe) == (False, breakers.OPEN, False)
    assert 0 < decision.wait_seconds <= OPEN_SECONDS
    # Other pairs are not affected.
    assert breakers.allow("gw", "anthropic")
    assert breakers.allow("other-gw", "openai")


def test_a_success_resets_the_count_of_consecutive_failures(redis_prefix):
    fail(4)
    assert breakers.record_success("gw", "openai") == breakers.CLOSED
    assert fail(4) == breakers.CLOSED
    assert breakers.allow("gw", "openai")


def test_after_the_open_time_one_probe_then_a_success_closes_it(redis_prefix):
    fail(5)
    wait_out_open_time()
    probe = breakers.check("gw", "openai")
    assert (probe.allowed, probe.probe, probe.state) == (True, True, breakers.HALF_OPEN)
    others = breakers.check("gw", "openai")
    assert (others.allowed, others.state) == (False, breakers.HALF_OPEN)
    assert 0 < others.wait_seconds <= OPEN_SECONDS
    assert breakers.record_success("gw", "openai") == breakers.CLOSED
    assert all(breakers.allow("gw", "openai") for _ in range(3))
    assert fail(4) == breakers.CLOSED  # the count started again


def test_a_failed_probe_opens_it_again_for_the_open_time(redis_prefix):
    fail(5)
    wait_out_open_time()
    assert breakers.check("gw", "openai").probe
    assert breakers.record_failure("gw", "openai") == breakers.OPEN
    assert not breakers.allow("gw", "openai")
    wait_out_open_time()
    assert breakers.check("gw", "openai").probe  # and then one more probe


def test_a_probe_whose_process_died_is_given_again_after_its_lease(redis_prefix, settings):
    settings.AGENTFLOW_BREAKER_PROBE_SECONDS = 0.3
    fail(5)
    wait_out_open_time()
    assert breakers.check("gw", "openai").probe  # ...and its worker never reports
    assert not breakers.allow("gw", "openai")
    time.sleep(0.35)
    assert breakers.check("gw", "openai").probe


def test_a_late_outcome_of_a_run_sent_before_it_opened_changes_nothing(redis_prefix):
    fail(5)
    assert breakers.record_success("gw", "openai") == breakers.OPEN
    assert breakers.record_failure("gw", "openai") == breakers.OPEN
    (state,) = breakers.states()
    assert (state.state, state.opens) == (breakers.OPEN, 1)


PROBER = """
from scheduler import breakers
start = float(sys.argv[1])
while time.time() < start:
    pass
decisions = [breakers.check("gw", "openai") for _ in range(200)]
print(json.dumps([sum(d.allowed for d in decisions), sum(d.probe for d in decisions)]))
"""


def test_exactly_one_probe_across_two_processes(redis_prefix):
    fail(5)
    start = time.time() + 6  # both interpreters are up, and the open time is over
    env = {"AGENTFLOW_BREAKER_OPEN_SECONDS": str(OPEN_SECONDS), "AGENTFLOW_BREAKER_FAILURES": "5"}
    processes = [start_python(PROBER, redis_prefix, start, **env) for _ in range(2)]
    counts = [answer(p) for p in processes]
    assert sum(allowed for allowed, _ in counts) == 1, counts
    assert sum(probes for _, probes in counts) == 1, counts
    (state,) = breakers.states()
    assert state.state == breakers.HALF_OPEN


def test_states_list_every_breaker_used(redis_prefix):
    breakers.allow("gw", "openai")
    fail(5, provider="anthropic")
    by_pair = {(s.gateway, s.provider): s for s in breakers.states()}
    assert by_pair[("gw", "openai")].state == breakers.CLOSED
    anthropic = by_pair[("gw", "anthropic")]
    assert (anthropic.state, anthropic.failures, anthropic.opens) == (breakers.OPEN, 5, 1)
    assert 0 < anthropic.retry_in <= OPEN_SECONDS
    breakers.reset("gw", "anthropic")
    assert breakers.allow("gw", "anthropic")


def test_metrics_show_closed_at_zero_then_open_then_half_open(redis_prefix, client, db):
    def state_of(provider: str) -> float | None:
        body = client.get("/metrics").content.decode()
        for family in text_string_to_metric_families(body):
            for s in family.samples:
                if s.name == "agentflow_breaker_state" and s.labels == {
                    "gateway": "gw",
                    "provider": provider,
                }:
                    return s.value
        return None

    assert state_of("openai") is None  # never used: no series
    assert breakers.allow("gw", "openai")
    assert state_of("openai") == 0
    fail(5)
    assert state_of("openai") == 2
    wait_out_open_time()
    assert breakers.check("gw", "openai").probe
    assert state_of("openai") == 1
    breakers.record_success("gw", "openai")
    assert state_of("openai") == 0
