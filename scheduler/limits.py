"""The shared rate limiter: request and token budgets per gateway, provider and model, kept in
Redis so every worker process draws on the same budget, and adaptive backoff after a provider's
rate-limit error.

Budget keys (build them with ``gateway_key``, ``provider_key``, ``model_key`` or ``keys_for``)::

    gateway:<id>            provider:<name>            model:<provider>/<model>

Budgets come from ``AGENTFLOW_RATE_LIMITS`` (``parse_budgets`` reads it, settings refuse a bad
one at start) and from a Redis hash of runtime overrides (``set_budget``/``clear_budget``: an
operator's change applies to every worker at its next ``acquire``). For a key the first of these
wins: runtime exact, settings exact, runtime wildcard (``provider:*``), settings wildcard. A key
without a budget is unlimited (but can still be blocked by ``backoff``).

Pacing is GCRA (the generic cell rate algorithm) in one Lua script over all keys of a request,
timed by Redis's clock: 60 rpm lets one request through per second, never 60 at once. A caller
that arrives up to half an interval late keeps its slot's place, so callers that sleep for the
wait they were told achieve the budget, and no window of W seconds ever holds more than
``W / interval + 1`` requests. A tpm budget is paced the same way in tokens: a request passes
once the tokens charged before it (the estimate at ``acquire``, the rest by ``record_tokens``)
are paid for at the budget's rate.

The engine's calls::

    decision = limits.acquire(limits.keys_for(gateway, provider, model), tokens_estimate=500)
    if not decision.allowed:            # not a failed attempt: run again after the wait
        retry_in(decision.wait_seconds)
    ...run...
    limits.record_tokens(keys, used_tokens, estimate=500)
    on a rate-limit error:  wait = limits.backoff(limits.provider_key(p), retry_after=seconds_or_None)
    on a success:           limits.clear_backoff(limits.provider_key(p))
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache

from django.conf import settings
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.commands.core import Script

from agentflow.lib.redis import get_redis, key

log = logging.getLogger("agentflow.scheduler.limits")

KINDS = ("gateway", "provider", "model")
JITTER = 0.10
# rate-limit waits run from a second to the 5-minute cap (and beyond for a manual block).
WAIT_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
_KEY_RE = re.compile(r"^(gateway|provider|model):([^\s,=]+)$")
_LIMIT_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(rpm|tpm)$")


class BudgetError(ValueError):
    """A budget key or value that cannot be read (the message says what is expected)."""


@dataclass(frozen=True)
class Budget:
    rpm: float = 0.0  # requests per minute; 0 = unlimited
    tpm: float = 0.0  # tokens per minute; 0 = unlimited

    def encode(self) -> str:
        return f"{self.rpm:g} {self.tpm:g}"

    @classmethod
    def decode(cls, raw: str | bytes) -> Budget:
        rpm, _, tpm = (raw.decode() if isinstance(raw, bytes) else raw).partition(" ")
        return cls(float(rpm or 0), float(tpm or 0))

    def __str__(self) -> str:
        parts = [f"{self.rpm:g}rpm"] if self.rpm else []
        parts += [f"{self.tpm:g}tpm"] if self.tpm else []
        return "/".join(parts) or "off"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    # refused: try again after this long; allowed: the next request of these keys may pass
    # after this long (their next slot; 0 when no budget paces them)
    wait_seconds: float = 0.0
    key: str | None = None  # the key that refused, or that sets the next slot (the longest wait)
    reason: str | None = None  # "rpm", "tpm" or "backoff"


@dataclass(frozen=True)
class KeyStatus:
    key: str
    budget: Budget
    source: str | None  # "runtime", "settings" or None (unlimited)
    rate_rpm: float  # requests in the last minute (sliding estimate)
    rate_tpm: float  # tokens in the last minute (sliding estimate)
    blocked_seconds: float  # until a backoff ends (0 when not blocked)
    errors: int  # consecutive rate-limit errors since the last success
    # how long the key has been rate limited: since the first error of the streak, while a
    # block is in force or the streak goes on (no success yet); 0 when not rate limited
    limited_seconds: float = 0.0


# --- keys and budgets ---------------------------------------------------------------------------


def gateway_key(gateway: object) -> str:
    return check_key(f"gateway:{gateway}")


def provider_key(provider: str) -> str:
    return check_key(f"provider:{provider}")


def model_key(provider: str, model: str) -> str:
    return check_key(f"model:{provider}/{model}")


def keys_for(gateway: object = None, provider: str | None = None, model: str | None = None) -> list[str]:
    """The keys a request draws on: its gateway, its provider and its provider's model."""
    keys = [gateway_key(gateway)] if gateway is not None else []
    if provider:
        keys.append(provider_key(provider))
        if model:
            keys.append(model_key(provider, model))
    return keys


def check_key(name: str, *, wildcard: bool = False) -> str:
    match = _KEY_RE.match(name.strip())
    if not match or (match[2] == "*" and not wildcard):
        allowed = " (or <kind>:* for every key of a kind)" if wildcard else ""
        raise BudgetError(
            f"{name!r} is not a budget key: use gateway:<id>, provider:<name> or "
            f"model:<provider>/<model>{allowed}"
        )
    if match[1] == "model" and match[2] != "*" and "/" not in match[2]:
        raise BudgetError(f"{name!r}: a model key is model:<provider>/<model>, e.g. model:openai/gpt-4o")
    return name.strip()


def wildcard_of(name: str) -> str:
    return name.partition(":")[0] + ":*"


def parse_budget(spec: str) -> Budget:
    """``60rpm``, ``90000tpm``, ``60rpm/90000tpm`` or ``off`` (unlimited)."""
    text = spec.strip().lower()
    if text in ("off", "unlimited"):
        return Budget()
    found: dict[str, float] = {}
    for part in text.split("/"):
        match = _LIMIT_RE.match(part.strip())
        if not match or match[2] in found or float(match[1]) <= 0:
            raise BudgetError(
                f"{spec!r} is not a budget: use <n>rpm, <n>tpm, <n>rpm/<n>tpm (n > 0) or off, "
                "e.g. 60rpm/90000tpm"
            )
        found[match[2]] = float(match[1])
    return Budget(rpm=found.get("rpm", 0.0), tpm=found.get("tpm", 0.0))


def parse_budgets(text: str) -> dict[str, Budget]:
    """``AGENTFLOW_RATE_LIMITS``: comma-separated ``<key>=<budget>`` entries, e.g.
    ``provider:openai=60rpm/90000tpm,gateway:*=120rpm,model:openai/gpt-4o=30rpm``."""
    budgets: dict[str, Budget] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        name, sep, spec = entry.partition("=")
        if not sep:
            raise BudgetError(f"{entry!r}: an entry is <key>=<budget>, e.g. provider:openai=60rpm")
        name = check_key(name, wildcard=True)
        if name in budgets:
            raise BudgetError(f"{name!r} is given twice")
        budgets[name] = parse_budget(spec)
    return budgets


@cache
def _parsed(text: str) -> dict[str, Budget]:
    return parse_budgets(text)


def configured() -> dict[str, Budget]:
    """The budgets of settings (``AGENTFLOW_RATE_LIMITS``), read once per value."""
    return _parsed(settings.AGENTFLOW_RATE_LIMITS)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _overrides_key() -> str:
    return key("ratelimit", "budgets")


def _seen_key() -> str:
    return key("ratelimit", "keys")


def _state_key(name: str) -> str:
    return key("ratelimit", "state", name)


def set_budget(name: str, spec: str | Budget) -> Budget:
    """A runtime budget for ``name`` (a key or a wildcard), for every worker from its next call."""
    name = check_key(name, wildcard=True)
    budget = spec if isinstance(spec, Budget) else parse_budget(spec)
    get_redis().hset(_overrides_key(), name, budget.encode())
    return budget


def clear_budget(name: str) -> None:
    """Drop the runtime budget of ``name``: the settings' budget applies again."""
    get_redis().hdel(_overrides_key(), check_key(name, wildcard=True))


def overrides() -> dict[str, Budget]:
    raw = get_redis().hgetall(_overrides_key())
    return {_text(k): Budget.decode(v) for k, v in raw.items()}


def resolve(name: str, runtime: dict[str, Budget] | None = None) -> tuple[Budget, str | None]:
    """The budget of ``name`` and where it came from (the precedence of the module docstring)."""
    runtime = overrides() if runtime is None else runtime
    static = configured()
    wild = wildcard_of(name)
    for table, source, candidate in (
        (runtime, "runtime", name),
        (static, "settings", name),
        (runtime, "runtime", wild),
        (static, "settings", wild),
    ):
        if candidate in table:
            return table[candidate], source
    return Budget(), None


# --- the scripts (Redis's clock, so workers on several hosts agree) -------------------------------

_COMMON = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function f(x) return string.format('%.6f', x) end
local function roll(h, p, amount)
  -- a sliding one-minute counter: this minute's count and the last one's
  local minute = math.floor(now / 60)
  local v = redis.call('HMGET', h, p .. 'win', p .. 'cur', p .. 'prev')
  local win, cur, prev = tonumber(v[1]), tonumber(v[2]) or 0, tonumber(v[3]) or 0
  if win == minute then cur = cur + amount
  elseif win == minute - 1 then prev = cur; cur = amount
  else prev = 0; cur = amount end
  if cur < 0 then cur = 0 end
  redis.call('HSET', h, p .. 'win', minute, p .. 'cur', cur, p .. 'prev', prev)
end
local function budget(i)
  -- ARGV from 3 on: name, settings exact, wildcard, settings wildcard (4 per key)
  local b = 3 + (i - 1) * 4
  local spec = redis.call('HGET', KEYS[1], ARGV[b])
  if not spec and ARGV[b + 1] ~= '' then spec = ARGV[b + 1] end
  if not spec then spec = redis.call('HGET', KEYS[1], ARGV[b + 2]) end
  if not spec and ARGV[b + 3] ~= '' then spec = ARGV[b + 3] end
  if not spec then return ARGV[b], 0, 0 end
  local rpm, tpm = string.match(spec, '^(%S+) (%S+)$')
  return ARGV[b], tonumber(rpm) or 0, tonumber(tpm) or 0
end
"""

# KEYS: overrides hash, seen set, one state hash per budget key.
# ARGV: mode ("acquire" | "tokens"), tokens, then 4 per key (see budget()).
_LIMIT = (
    _COMMON
    + """
local mode, tokens, n = ARGV[1], tonumber(ARGV[2]), #KEYS - 2
local keys = {}
local when, worst, reason = now, '', ''
for i = 1, n do
  local name, rpm, tpm = budget(i)
  local h = KEYS[i + 2]
  local v = redis.call('HMGET', h, 'tat', 'ttat', 'blocked')
  local k = {name = name, h = h, rpm = rpm, tpm = tpm,
             tat = tonumber(v[1]) or 0, ttat = tonumber(v[2]) or 0, blocked = tonumber(v[3]) or 0}
  keys[i] = k
  redis.call('SADD', KEYS[2], name)
  if mode == 'acquire' then
    if rpm > 0 and k.tat > when then when, worst, reason = k.tat, name, 'rpm' end
    if tpm > 0 and k.ttat > when then when, worst, reason = k.ttat, name, 'tpm' end
    if k.blocked > when then when, worst, reason = k.blocked, name, 'backoff' end
  end
end
if when > now then return {0, f(when - now), worst, reason} end
-- allowed: when the next request of these keys may pass (the next slot), and which key says so
local nxt, nkey, nreason = now, '', ''
for i = 1, n do
  local k = keys[i]
  if mode == 'acquire' and k.rpm > 0 then
    local interval = 60 / k.rpm
    -- a caller up to half an interval late keeps its slot's place in the pacing; later than
    -- that (or the first request after a pause) starts the pacing afresh from now
    local base = k.tat
    if now - base > interval / 2 then base = now end
    redis.call('HSET', k.h, 'tat', f(base + interval))
    if base + interval > nxt then nxt, nkey, nreason = base + interval, k.name, 'rpm' end
  end
  if k.tpm > 0 and tokens ~= 0 then
    local ttat = math.max(k.ttat, now) + tokens * 60 / k.tpm
    redis.call('HSET', k.h, 'ttat', f(math.max(ttat, now)))
    k.ttat = math.max(ttat, now)
  end
  if mode == 'acquire' then
    if k.tpm > 0 and k.ttat > nxt then nxt, nkey, nreason = k.ttat, k.name, 'tpm' end
    if k.blocked > nxt then nxt, nkey, nreason = k.blocked, k.name, 'backoff' end
  end
  if mode == 'acquire' then roll(k.h, 'r', 1) end
  if tokens ~= 0 then roll(k.h, 't', tokens) end
  redis.call('PEXPIRE', k.h, 86400000)
end
return {1, f(nxt - now), nkey, nreason}
"""
)

# KEYS: state hash, seen set. ARGV: name, base, cap, retry_after ('' = none), jitter factor.
_BACKOFF = (
    _COMMON
    + """
local errors = redis.call('HINCRBY', KEYS[1], 'errors', 1)
-- the first error of a streak: since when the key is rate limited (the alert rule's duration)
if errors == 1 or not redis.call('HGET', KEYS[1], 'since') then
  redis.call('HSET', KEYS[1], 'since', f(now))
end
local cap = tonumber(ARGV[3])
local wait
if ARGV[4] ~= '' then
  wait = math.min(tonumber(ARGV[4]), cap)
else
  wait = math.min(math.min(tonumber(ARGV[2]) * 2 ^ (errors - 1), cap) * tonumber(ARGV[5]), cap)
end
local blocked = tonumber(redis.call('HGET', KEYS[1], 'blocked')) or 0
if now + wait > blocked then redis.call('HSET', KEYS[1], 'blocked', f(now + wait)) end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], 86400000)
return {f(wait), errors}
"""
)


@cache
def _scripts() -> tuple[Script, Script]:
    client = get_redis()
    return client.register_script(_LIMIT), client.register_script(_BACKOFF)


def _run_limit(mode: str, keys: Sequence[str], tokens: float) -> list:
    names = [check_key(k) for k in dict.fromkeys(keys)]  # in order, once each
    static = configured()
    argv: list[str] = [mode, f"{tokens:g}"]
    for name in names:
        exact, wild = static.get(name), static.get(wildcard_of(name))
        argv += [name, exact.encode() if exact else "", wildcard_of(name), wild.encode() if wild else ""]
    script = _scripts()[0]
    return script(keys=[_overrides_key(), _seen_key(), *map(_state_key, names)], args=argv)


def acquire(keys: Sequence[str], tokens_estimate: float = 0) -> Decision:
    """Take one request (and ``tokens_estimate`` tokens) from every key's budget, or none.

    Atomic across the keys: allowed only when every key allows it now; refused, it takes nothing
    and says how long to wait (the longest of the keys) and which key refused. A refusal is a
    wait, not a failure: call again after ``wait_seconds``. Allowed, ``wait_seconds`` and
    ``key`` say when the next request of these keys may pass (the next slot of the pacing), so
    a caller with more work waiting can wake up exactly then.
    """
    if tokens_estimate < 0:
        raise ValueError("tokens_estimate must be >= 0")
    allowed, wait, refusing, reason = _run_limit("acquire", keys, tokens_estimate)
    if allowed:
        if float(wait) <= 0:
            return Decision(True)
        return Decision(True, float(wait), _text(refusing), _text(reason))
    decision = Decision(False, float(wait), _text(refusing), _text(reason))
    _record_wait(decision)
    return decision


def record_tokens(keys: Sequence[str], tokens: float, estimate: float = 0) -> None:
    """Charge a finished request's tokens to the keys' tpm budgets (less the ``estimate`` that
    ``acquire`` charged already; a smaller actual use gives the difference back)."""
    if tokens < 0 or estimate < 0:
        raise ValueError("tokens and estimate must be >= 0")
    if tokens != estimate:
        _run_limit("tokens", keys, tokens - estimate)


def backoff(provider_key: str, retry_after: float | None = None) -> float:
    """After a rate-limit error: block ``provider_key`` (any key) for the returned seconds.

    Consecutive errors grow the wait from ``AGENTFLOW_RATE_LIMIT_BACKOFF_BASE`` (60 s: the
    gateway has already retried for about three minutes) doubling each time, with ±10 % jitter;
    a ``retry_after`` read from the error wins, exactly. Capped at
    ``AGENTFLOW_RATE_LIMIT_BACKOFF_CAP`` (300 s). Every ``acquire`` on the key waits it out; an
    earlier, longer block is kept.
    """
    name = check_key(provider_key)
    if retry_after is not None and (retry_after < 0 or math.isnan(retry_after)):
        raise ValueError("retry_after must be a number of seconds >= 0")
    jitter = random.uniform(1 - JITTER, 1 + JITTER)
    args = [
        name,
        f"{settings.AGENTFLOW_RATE_LIMIT_BACKOFF_BASE:g}",
        f"{settings.AGENTFLOW_RATE_LIMIT_BACKOFF_CAP:g}",
        "" if retry_after is None else f"{retry_after:g}",
        f"{jitter:.6f}",
    ]
    script = _scripts()[1]
    wait_raw, errors = script(keys=[_state_key(name), _seen_key()], args=args)
    wait = float(wait_raw)
    log.warning("rate limited: %s waits %.1fs", name, wait, extra={"key": name, "errors": errors})
    _record_wait(Decision(False, wait, name, "backoff"), backoff=True)
    return wait


def clear_backoff(name: str) -> None:
    """After a success: the next rate-limit error starts from the base wait again. A block in
    force is left to run out (runs started before the error may still succeed during it)."""
    get_redis().hdel(_state_key(check_key(name)), "errors", "since")


def lift(name: str) -> None:
    """End a backoff now and forget its errors (an operator's "unblock")."""
    get_redis().hdel(_state_key(check_key(name)), "errors", "blocked", "since")


# --- status and metrics -------------------------------------------------------------------------


def known_keys() -> list[str]:
    """Keys with an exact budget (settings or runtime) and every key ever acquired or blocked."""
    names = {k for k in configured() if not k.endswith(":*")}
    names |= {k for k in overrides() if not k.endswith(":*")}
    names |= {_text(k) for k in get_redis().smembers(_seen_key())}
    return sorted(names)


def _sliding(fields: dict[str, str], prefix: str, now: float) -> float:
    minute = math.floor(now / 60)
    win = fields.get(prefix + "win")
    cur, prev = float(fields.get(prefix + "cur", 0)), float(fields.get(prefix + "prev", 0))
    if win is None or int(win) < minute - 1:
        return 0.0
    if int(win) == minute - 1:
        cur, prev = 0.0, cur
    return prev * (1 - (now % 60) / 60) + cur


def status(names: Iterable[str] | None = None) -> list[KeyStatus]:
    """Each key's budget, current rate, remaining block and consecutive errors (for the queue
    page, the API and /metrics)."""
    client = get_redis()
    names = known_keys() if names is None else [check_key(n) for n in names]
    runtime = overrides()
    pipe = client.pipeline(transaction=False)
    pipe.time()
    for name in names:
        pipe.hgetall(_state_key(name))
    (seconds, micros), *states = pipe.execute()
    now = seconds + micros / 1_000_000
    result = []
    for name, raw in zip(names, states, strict=True):
        fields = {_text(k): _text(v) for k, v in raw.items()}
        budget, source = resolve(name, runtime)
        result.append(
            KeyStatus(
                key=name,
                budget=budget,
                source=source,
                rate_rpm=round(_sliding(fields, "r", now), 2),
                rate_tpm=round(_sliding(fields, "t", now), 2),
                blocked_seconds=round(max(0.0, float(fields.get("blocked", 0)) - now), 3),
                errors=int(fields.get("errors", 0)),
                limited_seconds=_limited_seconds(fields, now),
            )
        )
    return result


def _limited_seconds(fields: dict[str, str], now: float) -> float:
    since = float(fields.get("since", 0) or 0)
    if not since or (int(fields.get("errors", 0)) <= 0 and float(fields.get("blocked", 0)) <= now):
        return 0.0
    return round(max(0.0, now - since), 3)


def _record_wait(decision: Decision, backoff: bool = False) -> None:
    try:
        pipe = get_redis().pipeline(transaction=False)
        pipe.hincrby(key("metrics", "ratelimit_waits"), f"{decision.key}|{decision.reason}", 1)
        if backoff:
            pipe.hincrby(key("metrics", "ratelimit_backoffs"), str(decision.key), 1)
        hist = key("metrics", "ratelimit_wait", str(decision.key))
        for bound in WAIT_BUCKETS:
            if decision.wait_seconds <= bound:
                pipe.hincrby(hist, str(bound), 1)
        pipe.hincrby(hist, "+Inf", 1)
        pipe.hincrbyfloat(hist, "sum", decision.wait_seconds)
        pipe.execute()
    except Exception:  # metrics must never break a run
        log.warning("could not record rate-limit metrics", exc_info=True)


class RateLimitCollector(Collector):
    """Every known key is exported, at 0 before its first wait, so an alert rule has its series."""

    def collect(self) -> Iterator[Metric]:
        client = get_redis()
        statuses = status()
        names = [s.key for s in statuses]
        reasons = ("rpm", "tpm", "backoff")
        waits = {(n, r): 0.0 for n in names for r in reasons}
        for field, raw in client.hgetall(key("metrics", "ratelimit_waits")).items():
            name, _, reason = _text(field).partition("|")
            waits[(name, reason)] = float(raw)
        counter = CounterMetricFamily(
            "agentflow_rate_limit_waits", "Requests told to wait, by key and reason", labels=["key", "reason"]
        )
        for (name, reason), n in sorted(waits.items()):
            counter.add_metric([name, reason], n)
        yield counter
        backoffs = dict.fromkeys(names, 0.0)
        backoffs.update(
            {_text(k): float(v) for k, v in client.hgetall(key("metrics", "ratelimit_backoffs")).items()}
        )
        errors = CounterMetricFamily(
            "agentflow_rate_limit_backoffs", "Rate-limit errors reported (each one a backoff)", labels=["key"]
        )
        for name, n in sorted(backoffs.items()):
            errors.add_metric([name], n)
        yield errors
        hist = HistogramMetricFamily(
            "agentflow_rate_limit_wait_seconds", "Waits told to rate-limited requests", labels=["key"]
        )
        for name in names:
            data = {
                _text(k): float(v) for k, v in client.hgetall(key("metrics", "ratelimit_wait", name)).items()
            }
            buckets = [(str(b), data.get(str(b), 0.0)) for b in WAIT_BUCKETS] + [
                ("+Inf", data.get("+Inf", 0.0))
            ]
            hist.add_metric([name], buckets, data.get("sum", 0.0))
        yield hist
        blocked = GaugeMetricFamily(
            "agentflow_rate_limit_blocked_seconds",
            "Seconds until a backoff ends (0: not blocked)",
            labels=["key"],
        )
        budget = GaugeMetricFamily(
            "agentflow_rate_limit_budget", "Budget per minute (0: unlimited)", labels=["key", "unit"]
        )
        rate = GaugeMetricFamily(
            "agentflow_rate_limit_rate", "Use in the last minute (sliding)", labels=["key", "unit"]
        )
        for s in statuses:
            blocked.add_metric([s.key], s.blocked_seconds)
            budget.add_metric([s.key, "requests"], s.budget.rpm)
            budget.add_metric([s.key, "tokens"], s.budget.tpm)
            rate.add_metric([s.key, "requests"], s.rate_rpm)
            rate.add_metric([s.key, "tokens"], s.rate_tpm)
        yield blocked
        yield budget
        yield rate
