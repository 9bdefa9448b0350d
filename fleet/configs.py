"""Config history and the org chart (BATCH-002).

``config.get`` already redacts secrets as ``__OPENCLAW_REDACTED__``; we redact again by key
name so a gateway that forgets never gets a secret into our database.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from .models import Agent, ConfigHistory, Gateway
from .payloads import as_dict, as_list, as_str

REDACTED = "__REDACTED__"
SECRET_KEY_RE = re.compile(
    r"(token|secret|password|passwd|api[-_]?key|private[-_]?key|credential|cookie)", re.I
)


# Numbers under "...Tokens" keys are token counts and limits (maxTokens, contextTokens), not secrets.
TOKEN_COUNT_RE = re.compile(r"tokens$", re.I)


def _is_secret(key: Any, value: Any) -> bool:
    if not SECRET_KEY_RE.search(str(key)) or value == "" or isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return not TOKEN_COUNT_RE.search(str(key))
    return isinstance(value, str)


def _redact_entry(key: Any, value: Any) -> Any:
    if _is_secret(key, value):
        return REDACTED
    if isinstance(value, list) and SECRET_KEY_RE.search(str(key)):
        # A list under a secret key (e.g. "tokens": [...]) is a list of secrets.
        return [REDACTED if isinstance(item, str) and item else redact(item) for item in value]
    return redact(value)


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _redact_entry(k, v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def changed_paths(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths whose value differs (objects recursed into; lists compared whole)."""
    if isinstance(old, dict) and isinstance(new, dict):
        paths: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                paths.append(path)
            else:
                paths.extend(changed_paths(old[key], new[key], path))
        return paths
    return [] if old == new else [prefix or "(root)"]


def pretty(config: Any) -> list[str]:
    return json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def unified_diff(old: Any, new: Any, old_label: str = "previous", new_label: str = "current") -> str:
    return "\n".join(difflib.unified_diff(pretty(old), pretty(new), old_label, new_label, lineterm=""))


@dataclass
class ConfigResult:
    changed: bool
    row: ConfigHistory | None = None


def record_config(gateway: Gateway, payload: Any) -> ConfigResult:
    """Store a ``config.get`` payload if its hash differs from the last stored one."""
    if not isinstance(payload, dict) or not isinstance(payload.get("hash"), str):
        raise ValueError("config.get returned no hash")
    new_hash = payload["hash"]
    last = ConfigHistory.objects.filter(gateway=gateway).order_by("-created_at", "-id").first()
    if last is not None and last.hash == new_hash:
        return ConfigResult(changed=False)
    source = payload.get("sourceConfig") or payload.get("parsed") or payload.get("config") or {}
    config = redact(source if isinstance(source, dict) else {})
    previous = last.config if last else {}
    row = ConfigHistory.objects.create(
        gateway=gateway,
        hash=new_hash[:200],
        config=config,
        changed_paths=changed_paths(previous, config) if last else [],
        diff=unified_diff(previous, config) if last else "",
    )
    return ConfigResult(changed=True, row=row)


def _agent_config(config: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    agents = as_dict(config.get("agents"))
    entries = as_dict(agents.get("entries"))
    system = as_dict(as_dict(agents.get("defaults")).get("systemAgent"))
    return entries, as_str(system.get("agentId"), None)


def org_parents(
    agent_ids: list[str], default_id: str | None, entries: dict[str, Any]
) -> dict[str, str | None]:
    """Each agent's org-chart parent: the default agent on top, agents reachable through
    ``subagents.allowAgents`` under whoever may spawn them (breadth-first from the top), the
    rest directly under the gateway (None)."""
    parents: dict[str, str | None] = dict.fromkeys(agent_ids)
    known = set(agent_ids)
    if default_id not in known:
        return parents
    placed = {default_id}
    queue = [default_id]
    while queue:
        boss = queue.pop(0)
        sub = as_dict(as_dict(entries.get(boss)).get("subagents"))
        allowed = as_list(sub.get("allowAgents"))
        names = [a for a in allowed if isinstance(a, str)]  # a malformed entry must not break the chart
        targets = sorted(known - {boss}) if "*" in names else [a for a in names if a in known]
        for agent in targets:
            if agent not in placed:
                parents[agent] = boss
                placed.add(agent)
                queue.append(agent)
    return parents


def rebuild_roster(gateway: Gateway, roster: Any, config: dict[str, Any] | None) -> int:
    """Upsert agents from ``agents.list`` and recompute the org chart. Returns rows written."""
    if not isinstance(roster, dict) or not isinstance(roster.get("agents"), list):
        raise ValueError("agents.list returned no agents list")
    entries, system_id = _agent_config(config or {})
    default_id = as_str(roster.get("defaultId"), system_id)
    rows = [a for a in roster["agents"] if isinstance(a, dict) and isinstance(a.get("id"), str) and a["id"]]
    wanted: dict[str, dict[str, Any]] = {}
    for entry in rows:
        identity = as_dict(entry.get("identity"))
        model = entry.get("model")
        model_name = model.get("primary") if isinstance(model, dict) else model
        wanted[entry["id"][:200]] = {
            "name": str(entry.get("name") or identity.get("name") or entry["id"])[:200],
            "emoji": str(identity.get("emoji") or "")[:32],
            "model": str(model_name or "")[:200],
            "is_default": entry["id"] == default_id,
        }
    parents = org_parents(list(wanted), default_id, entries)
    writes = 0
    with transaction.atomic():
        existing = {a.agent_id: a for a in Agent.objects.filter(gateway=gateway)}
        for agent_id, fields in wanted.items():
            agent = existing.get(agent_id)
            if agent is None:
                existing[agent_id] = Agent.objects.create(gateway=gateway, agent_id=agent_id, **fields)
                writes += 1
            elif any(getattr(agent, k) != v for k, v in fields.items()):
                for k, v in fields.items():
                    setattr(agent, k, v)
                agent.save()
                writes += 1
        for agent_id, parent_id in parents.items():
            agent = existing[agent_id]
            new_parent = existing[parent_id].pk if parent_id else None
            if agent.parent_id != new_parent:
                Agent.objects.filter(pk=agent.pk).update(parent_id=new_parent)
                writes += 1
        # Agents gone from the roster stay (their sessions and history refer to them) but no
        # longer claim the top of the chart.
        writes += (
            Agent.objects.filter(gateway=gateway, is_default=True)
            .exclude(agent_id__in=list(wanted))
            .update(is_default=False, parent=None)
        )
    return writes
