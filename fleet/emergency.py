"""The gateway side of an emergency stop (scheduler/stops.py calls it through its stop hook).

On engage, for every gateway in the stop's scope, all at once (one connection each):

1. ``chat.abort {sessionKey, runId}`` for every run AgentFlow has in flight there (terminal
   event within about 100 ms, also during the gateway's own provider retries);
2. ``sessions.abort {key, clearQueued:true}`` for every other active session the gateway lists
   in scope, also ones AgentFlow did not start (an agent's or provider's sessions only, for
   those scopes; a priority stop touches only AgentFlow's own runs);
3. for a global or gateway stop, the gateway's own cron off (``config.patch
   {"cron":{"enabled":false}}``), remembering what the authored config said, so the release
   restores exactly that (a missing key is restored as missing). A token without
   ``operator.admin`` cannot: the reason is saved and shown.

Never the gateway's suspend fence: it blocks ``sessions.abort`` (AUTOMATION.md §4).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from openclaw import GatewayError
from scheduler import scopes, stops
from scheduler.models import Attempt, EmergencyStop, Run

from . import services
from .models import Agent, Gateway

log = logging.getLogger("agentflow.stops")

CRON_SCOPES = (EmergencyStop.Scope.GLOBAL, EmergencyStop.Scope.GATEWAY)
ACTIVE = ("running", "queued", "starting")
CALL_TIMEOUT = 5.0


def gateway_aliases(value: str) -> list[str]:
    """A gateway named by an operator (name or id) → the strings runs carry (its id) and its name."""
    found = Gateway.objects.filter(name=value).values_list("pk", "name").first()
    if found is None and value.isdigit():
        found = Gateway.objects.filter(pk=int(value)).values_list("pk", "name").first()
    return [str(found[0]), found[1]] if found else []


def _gateways(stop: EmergencyStop, in_flight: Sequence[tuple[Run, Attempt]]) -> list[Gateway]:
    ids = {int(r.gateway) for r, _ in in_flight if r.gateway.isdigit()}
    qs = Gateway.objects.filter(enabled=True)
    scope = stop.scope
    if scope == EmergencyStop.Scope.GLOBAL:
        ids |= set(qs.values_list("pk", flat=True))
    elif scope == EmergencyStop.Scope.GATEWAY:
        ids |= {int(a) for a in scopes.aliases("gateway", stop.value) if a.isdigit()}
    elif scope == EmergencyStop.Scope.AGENT:
        ids |= set(Agent.objects.filter(agent_id=stop.value).values_list("gateway_id", flat=True))
    elif scope == EmergencyStop.Scope.PROVIDER:
        ids |= set(
            Agent.objects.filter(model__startswith=f"{stop.value}/").values_list("gateway_id", flat=True)
        )
    return list(Gateway.objects.filter(pk__in=ids).order_by("name"))


def _session_in_scope(stop: EmergencyStop, row: Mapping[str, Any]) -> bool:
    if not (row.get("hasActiveRun") or row.get("activeRunIds") or row.get("status") in ACTIVE):
        return False
    scope = stop.scope
    if scope in CRON_SCOPES:
        return True
    if scope == EmergencyStop.Scope.AGENT:
        return row.get("agentId") == stop.value
    if scope == EmergencyStop.Scope.PROVIDER:
        return row.get("modelProvider") == stop.value
    return False  # a priority: only AgentFlow's own runs carry one


def _cron_held_by_other(
    stop: EmergencyStop, gateway: Gateway, others: Sequence[EmergencyStop]
) -> EmergencyStop | None:
    for other in others:
        if other.pk == stop.pk or other.scope not in CRON_SCOPES:
            continue
        state = (other.saved_state.get("fleet") or {}).get(gateway.name) or {}
        if state.get("cron_changed"):
            return other
    return None


async def _engage_one(
    stop: EmergencyStop,
    gateway: Gateway,
    flights: Sequence[tuple[str, str]],
    change_cron: bool,
) -> dict[str, Any]:
    state: dict[str, Any] = {"chat_aborts": 0, "session_aborts": 0, "cron_changed": False, "errors": []}
    client = services.async_client(gateway, request_timeout=CALL_TIMEOUT)
    started = time.perf_counter()
    try:
        await client.connect()
    except (GatewayError, OSError) as exc:
        state["errors"].append(f"could not connect: {exc}")
        return state
    state["connect_ms"] = round((time.perf_counter() - started) * 1000, 1)
    try:
        results = await asyncio.gather(
            *(client.chat_abort(key, run_id=run_id) for key, run_id in flights), return_exceptions=True
        )
        for (key, _), result in zip(flights, results, strict=True):
            if isinstance(result, BaseException):
                state["errors"].append(f"chat.abort {key}: {result}")
            else:
                state["chat_aborts"] += 1
        state["runs_aborted_at"] = time.time()  # every known run's abort acknowledged by the gateway
        state["aborts_ms"] = round((time.perf_counter() - started) * 1000 - state["connect_ms"], 1)
        known = {key for key, _ in flights}
        if stop.scope != EmergencyStop.Scope.PRIORITY:
            try:
                filters: dict[str, Any] = (
                    {"agentId": stop.value} if stop.scope == EmergencyStop.Scope.AGENT else {}
                )
                rows = await client.sessions_list(**filters)
            except GatewayError as exc:
                rows = []
                state["errors"].append(f"sessions.list: {exc}")
            active = [r for r in rows if _session_in_scope(stop, r) and r.get("key") not in known]
            results = await asyncio.gather(
                *(client.call("sessions.abort", {"key": r["key"], "clearQueued": True}) for r in active),
                return_exceptions=True,
            )
            for row, result in zip(active, results, strict=True):
                if isinstance(result, BaseException):
                    state["errors"].append(f"sessions.abort {row.get('key')}: {result}")
                else:
                    state["session_aborts"] += 1
        if change_cron:
            await _cron_off(stop, client, state)
    finally:
        await client.close()
    return state


def lacks_admin(exc: GatewayError) -> bool:
    """Whether the gateway refused a call for want of operator.admin."""
    missing = getattr(exc, "details", None) or {}
    return "admin" in str(exc).lower() or (
        isinstance(missing, dict) and missing.get("code") == "MISSING_SCOPE"
    )


async def authored_cron(client: Any) -> tuple[dict[str, Any], str]:
    """The ``cron`` table of the gateway's authored config and the config's hash."""
    config = await client.config_get()
    raw_parsed = config.get("parsed")
    parsed: dict[str, Any] = raw_parsed if isinstance(raw_parsed, dict) else {}
    raw_cron = parsed.get("cron")
    return (raw_cron if isinstance(raw_cron, dict) else {}), str(config.get("hash") or "")


async def set_cron_enabled(client: Any, value: bool | None, note: str, base_hash: str | None = None) -> None:
    """``config.patch {"cron": {"enabled": value}}`` (None: the key removed, the default: on).
    Needs operator.admin; raises ``GatewayError`` (see :func:`lacks_admin`)."""
    if base_hash is None:
        _, base_hash = await authored_cron(client)
    await client.config_patch({"cron": {"enabled": value}}, base_hash, note=note)


async def _cron_off(stop: EmergencyStop, client: Any, state: dict[str, Any]) -> None:
    try:
        cron, base_hash = await authored_cron(client)
        state["cron_present"] = "enabled" in cron
        state["cron_previous"] = cron.get("enabled")
        if cron.get("enabled") is False:
            state["cron_note"] = "its cron was already off"
            return
        await set_cron_enabled(client, False, f"AgentFlow emergency stop {stop.pk}", base_hash)
        state["cron_changed"] = True
    except GatewayError as exc:
        if lacks_admin(exc):
            state["cron_note"] = "its cron was not switched off: the token lacks operator.admin"
        else:
            state["cron_note"] = f"its cron was not switched off: {exc}"


def _run_async(coro: Any) -> Any:
    """Run ``coro`` to completion from sync code, also when this thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name="stop-hook")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def engage(stop: EmergencyStop, in_flight: Sequence[tuple[Run, Attempt]]) -> stops.HookResult:
    gateways = _gateways(stop, in_flight)
    if not gateways:
        return stops.HookResult()
    others = stops.engaged()
    plans = []
    notes: list[str] = []
    for gateway in gateways:
        flights = [
            (
                attempt.session_key or f"agent:{run.agent}:af-{run.pk}-{attempt.pk.hex[:12]}",
                attempt.external_id or str(attempt.pk),
            )
            for run, attempt in in_flight
            if run.gateway == str(gateway.pk)
        ]
        change_cron = stop.scope in CRON_SCOPES
        holder = _cron_held_by_other(stop, gateway, others) if change_cron else None
        if holder is not None:
            change_cron = False
            notes.append(f"{gateway.name}: its cron is already off (stop {holder.pk})")
        plans.append((gateway, flights, change_cron))

    async def main() -> list[Any]:
        return await asyncio.gather(
            *(_engage_one(stop, g, f, c) for g, f, c in plans), return_exceptions=True
        )

    results = _run_async(main())
    state: dict[str, Any] = {}
    for (gateway, _, _), result in zip(plans, results, strict=True):
        if isinstance(result, BaseException):
            result = {"errors": [f"{type(result).__name__}: {result}"], "cron_changed": False}
        state[gateway.name] = result
        runs, sessions = result.get("chat_aborts", 0), result.get("session_aborts", 0)
        done = f"{gateway.name}: {runs} run(s) and {sessions} other session(s) aborted"
        if result.get("cron_changed"):
            done += ", cron off"
        if result.get("cron_note"):
            done += f", {result['cron_note']}"
        if result.get("errors"):
            done += f"; {len(result['errors'])} error(s): {result['errors'][0]}"
        notes.append(done)
    return stops.HookResult(state=state, notes=notes)


async def _restore_one(gateway: Gateway, gw_state: Mapping[str, Any]) -> str:
    value = gw_state.get("cron_previous") if gw_state.get("cron_present") else None
    client = services.async_client(gateway, request_timeout=CALL_TIMEOUT)
    try:
        await client.connect()
        await set_cron_enabled(client, value, "AgentFlow: emergency stop released")
    except (GatewayError, OSError) as exc:
        return f"{gateway.name}: its cron could not be restored ({exc}); set cron.enabled back by hand"
    finally:
        await client.close()
    shown = "unset (the default)" if value is None else str(value).lower()
    return f"{gateway.name}: cron restored to {shown}"


def release(
    stop: EmergencyStop, state: Mapping[str, Any], still: Sequence[EmergencyStop]
) -> stops.HookResult:
    notes: list[str] = []
    jobs = []
    for name, gw_state in state.items():
        if not isinstance(gw_state, Mapping) or not gw_state.get("cron_changed"):
            continue
        gateway = Gateway.objects.filter(name=name).first()
        if gateway is None:
            notes.append(f"{name}: the gateway is gone; its cron was not restored")
            continue
        heir = next(
            (
                s
                for s in still
                if s.pk != stop.pk
                and (
                    s.scope == EmergencyStop.Scope.GLOBAL
                    or (s.scope == EmergencyStop.Scope.GATEWAY and name in scopes.aliases("gateway", s.value))
                )
            ),
            None,
        )
        if heir is not None:
            # Another stop still wants the cron off: it inherits what to restore.
            saved = dict(heir.saved_state)
            fleet_state = dict(saved.get("fleet") or {})
            fleet_state[name] = {
                **(fleet_state.get(name) or {}),
                **{k: gw_state.get(k) for k in ("cron_present", "cron_previous")},
                "cron_changed": True,
            }
            saved["fleet"] = fleet_state
            EmergencyStop.objects.filter(pk=heir.pk).update(saved_state=saved)
            notes.append(f"{name}: its cron stays off (stop {heir.pk} is still engaged)")
            continue
        jobs.append((gateway, gw_state))
    if jobs:

        async def main() -> list[str]:
            return list(await asyncio.gather(*(_restore_one(g, s) for g, s in jobs)))

        notes.extend(_run_async(main()))
    return stops.HookResult(notes=notes)


def register() -> None:
    scopes.register("gateway", gateway_aliases)
    stops.register_hook(stops.StopHook("fleet", engage, release))
