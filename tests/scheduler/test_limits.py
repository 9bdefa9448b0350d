"""scheduler.limits: budgets shared by every process through real Redis, smooth pacing, token
budgets, adaptive backoff after rate-limit errors, status and /metrics."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from scheduler import limits
from scheduler.limits import Budget, BudgetError
from tests.support.pyprocs import answer, start_python

pytestmark = pytest.mark.redis


def samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


# --- the settings format ------------------------------------------------------------------------


def test_it_reads_budgets_per_key_and_wildcard():
    budgets = limits.parse_budgets(
        "provider:openai=60rpm/90000tpm, gateway:*=120rpm,model:openai/gpt-4o=30rpm,provider:local=off"
    )
    assert budgets == {
        "provider:openai": Budget(rpm=60, tpm=90000),
        "gateway:*": Budget(rpm=120),
        "model:openai/gpt-4o": Budget(rpm=30),
        "provider:local": Budget(),
    }
    assert limits.parse_budgets("") == {}
    assert limits.parse_budget("0.5rpm") == Budget(rpm=0.5)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("provider:openai=60", "is not a budget"),
        ("provider:openai=60rps", "is not a budget"),
        ("provider:openai=0rpm", "n > 0"),
        ("provider:openai=60rpm/30rpm", "is not a budget"),
        ("provider:openai", "an entry is <key>=<budget>"),
        ("account:x=60rpm", "is not a budget key"),
        ("model:gpt-4o=60rpm", "model:<provider>/<model>"),
        ("provider:a=1rpm,provider:a=2rpm", "given twice"),
    ],
)
def test_a_bad_budget_is_refused_with_what_is_expected(text, says):
    with pytest.raises(BudgetError, match=says):
        limits.parse_budgets(text)


def test_settings_refuse_a_bad_budget_at_start(redis_prefix):
    process = start_python("", redis_prefix, AGENTFLOW_RATE_LIMITS="provider:openai=lots")
    _out, err = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "AGENTFLOW_RATE_LIMITS" in err and "'lots' is not a budget" in err


def test_a_bad_key_is_refused(redis_prefix):
    with pytest.raises(BudgetError):
        limits.acquire(["openai"])
    with pytest.raises(BudgetError):
        limits.acquire(["provider:*"])  # a wildcard is for budgets, not for requests
    assert limits.keys_for("gw-1", "openai", "gpt-4o") == [
        "gateway:gw-1",
        "provider:openai",
        "model:openai/gpt-4o",
    ]


# --- budgets: precedence and runtime overrides -------------------------------------------------------


def test_exact_beats_wildcard_and_runtime_beats_settings(redis_prefix, settings):
    settings.AGENTFLOW_RATE_LIMITS = "provider:*=60rpm,provider:openai=120rpm"
    assert limits.resolve("provider:openai") == (Budget(rpm=120), "settings")
    limits.set_budget("provider:*", "30rpm")
    assert limits.resolve("provider:openai") == (Budget(rpm=120), "settings")
    assert limits.resolve("provider:other") == (Budget(rpm=30), "runtime")
    limits.set_budget("provider:openai", "10rpm")
    assert limits.resolve("provider:openai") == (Budget(rpm=10), "runtime")
    limits.clear_budget("provider:openai")
    assert limits.resolve("provider:openai") == (Budget(rpm=120), "settings")
    assert limits.resolve("gateway:1") == (Budget(), None)


def test_a_runtime_budget_applies_at_the_next_acquire(redis_prefix, settings):
    settings.AGENTFLOW_RATE_LIMITS = "provider:openai=600rpm"
    keys = ["provider:openai"]
    assert limits.acquire(keys).allowed
    refused = limits.acquire(keys)
    assert not refused.allowed and 0.05 < refused.wait_seconds <= 0.1
    assert (refused.key, refused.reason) == ("provider:openai", "rpm")

    limits.set_budget("provider:openai", "6rpm")  # one per 10 s from the next request on
    time.sleep(refused.wait_seconds)
    assert limits.acquire(keys).allowed
    refused = limits.acquire(keys)
    assert 9 < refused.wait_seconds <= 10

    limits.set_budget("provider:openai", "off")
    assert limits.acquire(keys).allowed


def test_a_request_takes_from_every_key_or_from_none(redis_prefix, settings):
    settings.AGENTFLOW_RATE_LIMITS = "gateway:*=60rpm,provider:openai=60rpm"
    keys = limits.keys_for("gw", "openai")
    limits.backoff("provider:openai", retry_after=30)
    refused = limits.acquire(keys)
    assert (refused.allowed, refused.key, refused.reason) == (False, "provider:openai", "backoff")
    assert 29 < refused.wait_seconds <= 30
    limits.lift("provider:openai")
    # The refusal took no slot from the gateway's budget.
    assert limits.acquire(keys).allowed
    assert limits.acquire(["gateway:gw"]).reason == "rpm"


# --- pacing across processes -----------------------------------------------------------------------

PACER = """
from scheduler import limits
start, duration = float(sys.argv[1]), float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
times = []
while time.time() < start + duration:
    decision = limits.acquire(["gateway:pace", "provider:pace"])
    if decision.allowed:
        times.append(time.time())
    else:
        time.sleep(decision.wait_seconds)
print(json.dumps(times))
"""


def test_two_processes_share_one_smooth_budget_and_achieve_it(redis_prefix):
    rpm, duration = 600, 10.0  # one request per 100 ms
    interval = 60 / rpm
    limits.set_budget("gateway:pace", f"{rpm}rpm")  # a runtime budget: the processes read it from Redis
    limits.set_budget("provider:pace", "6000rpm")
    start = time.time() + 6  # both interpreters are up by then
    processes = [start_python(PACER, redis_prefix, start, duration) for _ in range(2)]
    runs = [answer(p) for p in processes]
    assert all(len(r) > 20 for r in runs), [len(r) for r in runs]  # both took part
    times = sorted(t for r in runs for t in r)

    # Never above the budget: no window holds more than (its length / interval) + 1 requests
    # (plus half an interval for the clients' own timestamps).
    worst = max(
        (j - i) - (times[j] - times[i]) / interval for i in range(len(times)) for j in range(i, len(times))
    )
    assert worst <= 1.5, worst
    # Smooth: never a burst (two requests closer than half an interval).
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) > interval / 2 - 0.01, min(gaps)
    # And the budget is achieved: within 5 %.
    achieved = (len(times) - 1) / (times[-1] - times[0]) * 60
    print(f"achieved {achieved:.1f} rpm of {rpm}, worst window excess {worst:.2f}, min gap {min(gaps):.3f}s")
    assert abs(achieved - rpm) / rpm < 0.05, achieved


# --- tokens per minute ------------------------------------------------------------------------------


def test_tokens_are_paced_at_the_tpm_budget(redis_prefix, settings):
    settings.AGENTFLOW_RATE_LIMITS = "model:openai/gpt-4o=6000tpm"  # 100 tokens a second
    keys = ["model:openai/gpt-4o"]
    assert limits.acquire(keys).allowed  # no estimate: nothing charged yet
    assert limits.acquire(keys).allowed
    limits.record_tokens(keys, 200)  # the run used 200 tokens: 2 s of budget
    refused = limits.acquire(keys)
    assert (refused.allowed, refused.reason) == (False, "tpm")
    assert 1.8 < refused.wait_seconds <= 2.0


def test_an_estimate_is_charged_up_front_and_settled_after(redis_prefix, settings):
    settings.AGENTFLOW_RATE_LIMITS = "provider:openai=6000tpm"
    keys = ["provider:openai"]
    assert limits.acquire(keys, tokens_estimate=500).allowed
    assert 4.8 < limits.acquire(keys).wait_seconds <= 5.0
    limits.record_tokens(keys, 100, estimate=500)  # it used less: 400 tokens given back
    assert 0.8 < limits.acquire(keys).wait_seconds <= 1.0
    with pytest.raises(ValueError):
        limits.record_tokens(keys, -1)


# --- adaptive backoff --------------------------------------------------------------------------------


def test_backoff_doubles_from_the_base_with_ten_percent_jitter_up_to_the_cap(redis_prefix, settings):
    settings.AGENTFLOW_RATE_LIMIT_BACKOFF_BASE = 60
    settings.AGENTFLOW_RATE_LIMIT_BACKOFF_CAP = 300
    bounds = [(54, 66), (108, 132), (216, 264), (270, 300), (270, 300), (270, 300)]
    seen: list[list[float]] = [[] for _ in bounds]
    for _ in range(15):
        for n, (low, high) in enumerate(bounds):
            wait = limits.backoff("provider:openai")
            assert low <= wait <= high, (n + 1, wait)
            seen[n].append(wait)
        limits.clear_backoff("provider:openai")
    # Jittered, not fixed: the waits of one step differ between episodes. At the cap, a jitter
    # above 1 is cut to the cap (half the draws): those steps still vary, with fewer values.
    assert all(len(set(waits)) > 5 for waits in seen[:3])
    assert all(len(set(waits)) > 1 and min(waits) < 300 for waits in seen[3:])
    assert limits.status(["provider:openai"])[0].errors == 0


def test_an_explicit_retry_after_wins_exactly_within_the_cap(redis_prefix, settings):
    settings.AGENTFLOW_RATE_LIMIT_BACKOFF_CAP = 300
    assert limits.backoff("provider:openai", retry_after=7) == 7
    assert limits.backoff("provider:openai", retry_after=7.5) == 7.5
    assert limits.backoff("provider:openai", retry_after=3600) == 300
    assert limits.status(["provider:openai"])[0].errors == 3
    with pytest.raises(ValueError):
        limits.backoff("provider:openai", retry_after=-1)


def test_a_backoff_blocks_every_request_on_the_key_until_it_ends(redis_prefix, settings):
    settings.AGENTFLOW_RATE_LIMIT_BACKOFF_BASE = 0.5
    wait = limits.backoff("provider:openai")
    assert 0.45 <= wait <= 0.55
    refused = limits.acquire(["provider:openai"])
    assert (refused.allowed, refused.reason) == (False, "backoff")
    assert refused.wait_seconds <= wait
    # A shorter wait never shortens the block in force.
    limits.backoff("provider:openai", retry_after=0)
    assert not limits.acquire(["provider:openai"]).allowed
    time.sleep(refused.wait_seconds + 0.01)
    assert limits.acquire(["provider:openai"]).allowed
    # A success resets the count: the next error waits the base again.
    limits.clear_backoff("provider:openai")
    assert 0.45 <= limits.backoff("provider:openai") <= 0.55


# --- status and metrics --------------------------------------------------------------------------


def test_status_tells_budget_rate_block_and_errors(redis_prefix, settings):
    settings.AGENTFLOW_RATE_LIMITS = "provider:openai=6000rpm/60000tpm,gateway:*=120rpm"
    keys = limits.keys_for("gw", "openai")
    for _ in range(3):
        while not limits.acquire(keys, tokens_estimate=10).allowed:
            time.sleep(0.01)
    limits.backoff("provider:openai", retry_after=30)
    by_key = {s.key: s for s in limits.status()}
    assert set(by_key) == {"gateway:gw", "provider:openai"}
    openai = by_key["provider:openai"]
    assert (openai.budget, openai.source) == (Budget(rpm=6000, tpm=60000), "settings")
    assert (openai.rate_rpm, openai.rate_tpm, openai.errors) == (3, 30, 1)
    assert 29 < openai.blocked_seconds <= 30
    assert by_key["gateway:gw"].blocked_seconds == 0
    assert by_key["gateway:gw"].budget == Budget(rpm=120)


def test_metrics_export_known_keys_at_zero_then_count_waits(redis_prefix, settings, client, db):
    settings.AGENTFLOW_RATE_LIMITS = "provider:openai=60rpm"
    before = samples(client.get("/metrics").content.decode())
    labels = (("key", "provider:openai"), ("reason", "rpm"))
    assert before[("agentflow_rate_limit_waits_total", labels)] == 0
    assert before[("agentflow_rate_limit_wait_seconds_count", (("key", "provider:openai"),))] == 0
    assert before[("agentflow_rate_limit_budget", (("key", "provider:openai"), ("unit", "requests")))] == 60

    assert limits.acquire(["provider:openai"]).allowed
    assert not limits.acquire(["provider:openai"]).allowed
    limits.backoff("provider:openai", retry_after=90)
    body = client.get("/metrics").content.decode()
    after = samples(body)
    assert after[("agentflow_rate_limit_waits_total", labels)] == 1
    assert (
        after[("agentflow_rate_limit_waits_total", (("key", "provider:openai"), ("reason", "backoff")))] == 1
    )
    assert after[("agentflow_rate_limit_backoffs_total", (("key", "provider:openai"),))] == 1
    hist = "agentflow_rate_limit_wait_seconds_bucket"
    assert after[(hist, (("key", "provider:openai"), ("le", "1.0")))] == 1  # the ~1 s pacing wait
    assert after[(hist, (("key", "provider:openai"), ("le", "60.0")))] == 1
    assert after[(hist, (("key", "provider:openai"), ("le", "120.0")))] == 2  # and the 90 s backoff
    assert after[(hist, (("key", "provider:openai"), ("le", "3600.0")))] == 2
    assert 85 < after[("agentflow_rate_limit_blocked_seconds", (("key", "provider:openai"),))] <= 90
    assert "# TYPE agentflow_rate_limit_wait_seconds histogram" in body
