"""Circuit breakers per gateway × provider, shared by every process through Redis.

closed ──(AGENTFLOW_BREAKER_FAILURES consecutive failures, 5)──▶ open
open ──(AGENTFLOW_BREAKER_OPEN_SECONDS, 60)──▶ half-open: the first caller of ``allow`` gets the
    single probe; everyone else waits
half-open ──(a success)──▶ closed      half-open ──(a failure)──▶ open again, for the same time

While a breaker is open its runs wait (``check(...).wait_seconds``); they do not fail. A probe
whose process died does not wedge the breaker: after ``AGENTFLOW_BREAKER_PROBE_SECONDS`` the
next caller gets a new probe.

Each transition is one Lua script on one Redis hash, timed by Redis's clock, so the decisions of
all workers are serial. (pybreaker's ``CircuitRedisStorage`` was the first choice; it does not
fit: its half-open state lets every caller through, and its open → half-open step is a read
then a write from each process, so two workers both probe; and it wraps a call, while an agent
run's outcome arrives later, in another process, from the listener's events.)

The engine's calls::

    decision = breakers.check(gateway, provider)   # or breakers.allow(...) -> bool
    if not decision.allowed: retry_in(decision.wait_seconds)      # a wait, not a failure
    ... later, wherever the outcome is known:
    breakers.record_success(gateway, provider) / breakers.record_failure(gateway, provider)

Which failures count is the caller's choice: execution failures (server error, timeout,
unreachable), not rate limits (``scheduler.limits`` paces those) nor a bad request.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

from django.conf import settings
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.commands.core import Script

from agentflow.lib.redis import get_redis, key

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}  # agentflow_breaker_state

# KEYS: the breaker's hash, the set of known breakers.
# ARGV: op (allow | success | failure), member, failures to open, open seconds, probe seconds.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function f(x) return string.format('%.6f', x) end
local h, op = KEYS[1], ARGV[1]
local threshold, open_s, probe_s = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local v = redis.call('HMGET', h, 'state', 'failures', 'opened_at', 'probe_until')
local state, failures = v[1] or 'closed', tonumber(v[2]) or 0
local opened, probe = tonumber(v[3]) or 0, tonumber(v[4]) or 0
redis.call('SADD', KEYS[2], ARGV[2])
local allowed, wait, probing = 0, 0, 0
if op == 'allow' then
  if state == 'closed' then
    allowed = 1
  elseif state == 'open' and now < opened + open_s then
    wait = opened + open_s - now
  elseif state == 'open' or now >= probe then
    -- the first caller after the open time (or after a probe's lease ran out) probes
    state, probe, allowed, probing = 'half_open', now + probe_s, 1, 1
    redis.call('HINCRBY', h, 'probes', 1)
  else
    wait = math.min(probe - now, open_s)
  end
elseif op == 'failure' then
  if state == 'closed' then
    failures = failures + 1
    if failures >= threshold then state, opened = 'open', now; redis.call('HINCRBY', h, 'opens', 1) end
  elseif state == 'half_open' then
    failures, state, opened = failures + 1, 'open', now
    redis.call('HINCRBY', h, 'opens', 1)
  end
  -- open: a late failure of a run sent before it opened changes nothing
elseif op == 'success' then
  -- open: a late success of a run sent before it opened; the probe decides
  if state ~= 'open' then state, failures = 'closed', 0 end
end
redis.call('HSET', h, 'state', state, 'failures', failures, 'opened_at', f(opened), 'probe_until', f(probe))
return {allowed, f(wait), state, failures, probing}
"""


@dataclass(frozen=True)
class BreakerDecision:
    allowed: bool
    wait_seconds: float  # when refused: check again after this long
    state: str  # closed, half_open or open (after this call)
    probe: bool  # this caller holds the single half-open probe


@dataclass(frozen=True)
class BreakerState:
    gateway: str
    provider: str
    state: str
    failures: int  # consecutive failures
    retry_in: float  # open: seconds until the probe; half-open: until the probe's lease ends
    opens: int  # times opened


@cache
def _script() -> Script:
    return get_redis().register_script(_SCRIPT)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _known_key() -> str:
    return key("breaker", "known")


def _member(gateway: object, provider: str) -> str:
    return json.dumps([str(gateway), str(provider)])


def _hash_key(member: str) -> str:
    return key("breaker", "state", member)


@dataclass(frozen=True)
class Breaker:
    """The breaker of one gateway (its name, as in the fleet's metrics) and one provider."""

    gateway: str
    provider: str

    def _call(self, op: str, probe_seconds: float | None = None) -> list:
        member = _member(self.gateway, self.provider)
        args: list[str | int] = [
            op,
            member,
            settings.AGENTFLOW_BREAKER_FAILURES,
            f"{settings.AGENTFLOW_BREAKER_OPEN_SECONDS:g}",
            f"{probe_seconds or settings.AGENTFLOW_BREAKER_PROBE_SECONDS:g}",
        ]
        return _script()(keys=[_hash_key(member), _known_key()], args=args)

    def check(self, probe_seconds: float | None = None) -> BreakerDecision:
        """May a run go now? Closed: yes. Open: no, with the time left. Half-open: only the one
        caller that wins the probe (``probe_seconds``: how long its lease lasts)."""
        allowed, wait, state, _failures, probing = self._call("allow", probe_seconds)
        return BreakerDecision(bool(allowed), float(wait), _text(state), bool(probing))

    def allow(self) -> bool:
        return self.check().allowed

    def record_success(self) -> str:
        """A run through this breaker succeeded: closed (and failures forgotten), unless open."""
        return _text(self._call("success")[2])

    def record_failure(self) -> str:
        """A run failed (an execution failure): the Nth consecutive one opens the breaker; a
        failed probe opens it again."""
        return _text(self._call("failure")[2])


def breaker_for(gateway: object, provider: str) -> Breaker:
    return Breaker(str(gateway), str(provider))


def check(gateway: object, provider: str, probe_seconds: float | None = None) -> BreakerDecision:
    return breaker_for(gateway, provider).check(probe_seconds)


def allow(gateway: object, provider: str) -> bool:
    return breaker_for(gateway, provider).allow()


def record_success(gateway: object, provider: str) -> str:
    return breaker_for(gateway, provider).record_success()


def record_failure(gateway: object, provider: str) -> str:
    return breaker_for(gateway, provider).record_failure()


def reset(gateway: object, provider: str) -> None:
    """Close the breaker now (an operator's action)."""
    member = _member(gateway, provider)
    get_redis().hset(_hash_key(member), mapping={"state": CLOSED, "failures": 0, "probe_until": 0})


def states() -> list[BreakerState]:
    """Every breaker ever used, for the queue page, the API and /metrics."""
    client = get_redis()
    members = sorted(_text(m) for m in client.smembers(_known_key()))
    pipe = client.pipeline(transaction=False)
    pipe.time()
    for member in members:
        pipe.hgetall(_hash_key(member))
    (seconds, micros), *rows = pipe.execute()
    now = seconds + micros / 1_000_000
    open_s = settings.AGENTFLOW_BREAKER_OPEN_SECONDS
    result = []
    for member, raw in zip(members, rows, strict=True):
        gateway, provider = json.loads(member)
        fields = {_text(k): _text(v) for k, v in raw.items()}
        state = fields.get("state", CLOSED)
        if state == OPEN:
            retry_in = float(fields.get("opened_at", 0)) + open_s - now
        elif state == HALF_OPEN:
            retry_in = float(fields.get("probe_until", 0)) - now
        else:
            retry_in = 0.0
        result.append(
            BreakerState(
                gateway=gateway,
                provider=provider,
                state=state,
                failures=int(fields.get("failures", 0)),
                retry_in=round(max(0.0, retry_in), 3),
                opens=int(fields.get("opens", 0)),
            )
        )
    return result


class BreakerCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "agentflow_breaker_state",
            "Circuit breaker per gateway and provider: 0 closed, 1 half-open, 2 open",
            labels=["gateway", "provider"],
        )
        failures = GaugeMetricFamily(
            "agentflow_breaker_failures", "Consecutive failures counted", labels=["gateway", "provider"]
        )
        opens = CounterMetricFamily(
            "agentflow_breaker_opens", "Times the breaker opened", labels=["gateway", "provider"]
        )
        for s in states():
            labels = [s.gateway, s.provider]
            state.add_metric(labels, STATE_VALUES.get(s.state, 0))
            failures.add_metric(labels, s.failures)
            opens.add_metric(labels, s.opens)
        yield state
        yield failures
        yield opens
