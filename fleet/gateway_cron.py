"""Each gateway's own cron (openclaw/AUTOMATION.md section 4), shown and switched, never used as
AgentFlow's engine.

- :func:`overview`: for every enabled gateway at once (one connection each, a few seconds at
  most): ``cron.status`` (is its scheduler on), ``cron.list`` (the jobs, their schedule and next
  run) and ``cron.runs`` (the latest result of each job). A gateway that does not answer is
  shown with the reason.
- :func:`pause` / :func:`resume`: ``config.patch {"cron": {"enabled": false}}`` / ``null`` (the
  default, on) through the emergency stop's own function (``emergency.set_cron_enabled``).
  Controls: role admin, one audit row each. The gateway needs a token with ``operator.admin``
  (AGENTFLOW_GATEWAY_SCOPES); without it the refusal says so. A resume while an engaged
  emergency stop holds the gateway's cron off is refused (the release restores it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings

from openclaw import GatewayError
from scheduler import audit, stops

from . import emergency, services
from .models import Gateway

TIMEOUT = 4.0
ADMIN_SCOPE = "operator.admin"


@dataclass
class CronJob:
    id: str
    name: str
    agent: str
    schedule: str
    enabled: bool
    next_run: datetime | None = None
    last_run: datetime | None = None
    last_status: str = ""
    last_summary: str = ""


@dataclass
class GatewayCron:
    gateway: Gateway
    enabled: bool | None = None  # its scheduler, as cron.status says; None: unknown
    jobs: list[CronJob] = field(default_factory=list)
    error: str = ""

    @property
    def can_switch(self) -> bool:
        return ADMIN_SCOPE in settings.GATEWAY_SCOPES

    @property
    def state(self) -> str:
        """running, paused, unreachable or unknown (the Automation page's badge)."""
        if self.error:
            return "unreachable"
        return {True: "running", False: "paused"}.get(self.enabled, "unknown")  # type: ignore[arg-type]

    @property
    def switch_reason(self) -> str:
        """Why the switch is off ("" when it is on)."""
        if not self.can_switch:
            return (
                "AgentFlow connects without operator.admin (AGENTFLOW_GATEWAY_SCOPES), which "
                "config.patch needs: the gateway's cron cannot be switched from here."
            )
        if self.error:
            return "The gateway did not answer."
        return ""


def _when(ms: Any) -> datetime | None:
    if isinstance(ms, int | float) and not isinstance(ms, bool) and ms > 0:
        return datetime.fromtimestamp(ms / 1000, tz=UTC)
    return None


def schedule_text(schedule: Any) -> str:
    if not isinstance(schedule, dict):
        return "?"
    kind = schedule.get("kind")
    if kind == "cron":
        tz = schedule.get("tz") or schedule.get("timezone")
        return f"cron {schedule.get('expr', '?')}" + (f" ({tz})" if tz else "")
    if kind == "every":
        every = schedule.get("everyMs")
        if isinstance(every, int):
            seconds = every // 1000
            for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
                if seconds >= size and seconds % size == 0:
                    return f"every {seconds // size} {unit}"
            return f"every {seconds} s"
    if kind == "at":
        at = _when(schedule.get("atMs"))
        return f"at {at:%Y-%m-%d %H:%M} UTC" if at else "once"
    return str(kind or "?")


def parse_jobs(listing: Any, runs: Any) -> list[CronJob]:
    rows = listing.get("jobs") if isinstance(listing, dict) else None
    latest: dict[str, dict[str, Any]] = {}
    entries = runs.get("entries") if isinstance(runs, dict) else None
    for entry in entries or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("jobId"), str):
            continue
        seen = latest.get(entry["jobId"])
        if seen is None or (entry.get("ts") or 0) > (seen.get("ts") or 0):
            latest[entry["jobId"]] = entry
    jobs = []
    for row in rows or []:
        if not isinstance(row, dict):
            continue
        raw_state = row.get("state")
        state: dict[str, Any] = raw_state if isinstance(raw_state, dict) else {}
        job_id = str(row.get("id") or "")
        last = latest.get(job_id, {})
        jobs.append(
            CronJob(
                id=job_id,
                name=str(row.get("name") or job_id)[:200],
                agent=str(row.get("effectiveAgentId") or row.get("agentId") or "")[:100],
                schedule=schedule_text(row.get("schedule")),
                enabled=row.get("enabled") is not False,
                next_run=_when(row.get("nextRunAtMs") or state.get("nextRunAtMs")),
                last_run=_when(state.get("lastRunAtMs") or last.get("runAtMs")),
                last_status=str(state.get("lastRunStatus") or last.get("status") or "")[:40],
                last_summary=str(last.get("summary") or last.get("error") or "")[:300],
            )
        )
    return sorted(
        jobs, key=lambda j: (j.next_run is None, j.next_run or datetime.max.replace(tzinfo=UTC), j.name)
    )


async def _one(gateway: Gateway, timeout: float) -> GatewayCron:
    shown = GatewayCron(gateway)
    client = services.async_client(gateway, request_timeout=timeout, connect_timeout=timeout)
    try:
        await client.connect()
        status, listing, runs = await asyncio.gather(
            client.call("cron.status", {}, attempts=1),
            client.call("cron.list", {"limit": 200}, attempts=1),
            client.call("cron.runs", {"limit": 100}, attempts=1),
        )
        shown.enabled = status.get("enabled") if isinstance(status, dict) else None
        shown.jobs = parse_jobs(listing, runs)
    except (GatewayError, OSError, TimeoutError) as exc:
        shown.error = str(exc)[:300] or type(exc).__name__
    finally:
        await client.close()
    return shown


def overview(gateways: list[Gateway] | None = None, timeout: float = TIMEOUT) -> list[GatewayCron]:
    """Every enabled gateway's cron, asked of all gateways at once."""
    gateways = (
        gateways if gateways is not None else list(Gateway.objects.filter(enabled=True).order_by("name"))
    )
    if not gateways:
        return []

    async def main() -> list[GatewayCron]:
        return list(await asyncio.gather(*(_one(g, timeout) for g in gateways)))

    return emergency._run_async(main())


def _switch(actor: audit.Actor, gateway: Gateway, enabled: bool, reason: str) -> str:
    action = "gateway.cron.resume" if enabled else "gateway.cron.pause"
    target = audit.Target("gateway", str(gateway.pk), gateway.name)
    with audit.control(action, actor, target, needs="administer", reason=reason) as ctl:
        if enabled:
            holder = _stop_holding(gateway)
            if holder is not None:
                message = f"emergency stop {holder.pk} holds this gateway's cron off: release the stop"
                ctl.fail(message)
                return message
        if ADMIN_SCOPE not in settings.GATEWAY_SCOPES:
            message = "the gateway token lacks operator.admin (AGENTFLOW_GATEWAY_SCOPES): cron not switched"
            ctl.fail(message)
            return message

        async def main() -> None:
            client = services.async_client(gateway, request_timeout=TIMEOUT, connect_timeout=TIMEOUT)
            try:
                await client.connect()
                note = f"AgentFlow: cron {'resumed' if enabled else 'paused'} by {actor.label}"
                await emergency.set_cron_enabled(client, None if enabled else False, note)
            finally:
                await client.close()

        try:
            emergency._run_async(main())
        except GatewayError as exc:
            message = (
                "the gateway refused: the token lacks operator.admin"
                if emergency.lacks_admin(exc)
                else f"the gateway refused: {exc}"
            )
            ctl.fail(message)
            return message
        except (OSError, TimeoutError) as exc:
            message = f"the gateway did not answer: {exc or type(exc).__name__}"
            ctl.fail(message)
            return message
        done = f"{gateway.name}: cron {'resumed' if enabled else 'paused'}"
        ctl.note(done)
        return ""


def _stop_holding(gateway: Gateway) -> Any:
    """The engaged emergency stop that switched this gateway's cron off, if any."""
    for stop in stops.engaged():
        state = (stop.saved_state.get("fleet") or {}).get(gateway.name) or {}
        if stop.scope in emergency.CRON_SCOPES and state.get("cron_changed"):
            return stop
    return None


def pause(actor: audit.Actor, gateway: Gateway, reason: str = "") -> str:
    """Switch the gateway's own cron off. Returns "" when done, else why not (recorded)."""
    return _switch(actor, gateway, False, reason)


def resume(actor: audit.Actor, gateway: Gateway, reason: str = "") -> str:
    """Switch it back on (``enabled`` unset: the gateway's default)."""
    return _switch(actor, gateway, True, reason)
