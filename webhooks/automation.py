"""Webhooks' parts of ``manage.py automation``: a status table (endpoints, their URL and last
delivery) and automation as code for ``[[automation.webhook.handlers]]``::

    [[automation.webhook.handlers]]
    name = "github-push"               # the slug: served at /webhooks/github-push/
    provider = "github"                # github | slack | stripe | standard | hmac
    event = "github.push"              # or a list; "*" for any
    secret = "${GITHUB_WEBHOOK_SECRET}"  # a reference, resolved from the environment at import
    job = "review_push"                # a job that exists or is declared in the same file
    # optional: enabled, branch, filters = {action = "opened"}, input = {repo = "{{ payload... }}"},
    #           rate_limit (a minute), max_body (bytes)

The secret is never written out: export writes the reference it was imported from, and an
endpoint whose secret was typed in the admin exports ``secret = "${WEBHOOK_SECRET_<SLUG>}"`` with
a note, so importing that file elsewhere needs the variable set.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.utils import timezone

from scheduler import automation
from scheduler.models import Job

from .inputs import check_templates
from .models import Endpoint
from .providers import PROVIDERS

KEY = "webhook.handlers"
_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_FIELDS = {
    "name",
    "provider",
    "event",
    "secret",
    "job",
    "enabled",
    "branch",
    "filters",
    "input",
    "rate_limit",
    "max_body",
}


def register() -> None:
    automation.register_status(
        automation.StatusSection(
            key="webhooks",
            title="Webhook endpoints",
            order=20,
            columns=(
                ("name", "Endpoint"),
                ("url", "URL"),
                ("provider", "Provider"),
                ("events", "Events"),
                ("job", "Job"),
                ("last", "Last delivery"),
            ),  # fmt: skip
            rows=status_rows,
            empty="No webhook endpoint.",
        )
    )
    automation.register_config(
        automation.ConfigSection(
            name="webhooks",
            key=KEY,
            order=50,
            export=export,
            plan=plan,
            apply=apply,
            fields=frozenset(_FIELDS),  # the import refuses any other key of a handler
        )
    )


def status_rows() -> list[dict[str, str]]:
    now = timezone.now()
    rows = []
    for endpoint in Endpoint.objects.select_related("job").with_last_delivery():
        last = "never"
        last_at = getattr(endpoint, "last_at", None)  # annotated by with_last_delivery()
        if last_at is not None:
            minutes = int((now - last_at).total_seconds() // 60)
            when = (
                "just now"
                if minutes < 1
                else f"{minutes} min ago"
                if minutes < 120
                else f"{minutes // 60} h ago"
            )
            last = f"{getattr(endpoint, 'last_verdict', '')}, {when} ({last_at:%Y-%m-%d %H:%M} UTC)"
        rows.append(
            {
                "name": endpoint.slug + ("" if endpoint.enabled else " (disabled)"),
                "url": endpoint.url,
                "provider": endpoint.provider_label,
                "events": endpoint.events_label,
                "job": endpoint.job.name,
                "last": last,
            }
        )
    return rows


def _reference_for(endpoint: Endpoint) -> str:
    name = endpoint.secret_env or "WEBHOOK_SECRET_" + re.sub(r"[^A-Z0-9]", "_", endpoint.slug.upper())
    return "${" + name + "}"


def export() -> list[dict[str, Any]]:
    entries = []
    for endpoint in Endpoint.objects.select_related("job"):
        events = [e if "." in e or e == "*" else f"{endpoint.provider}.{e}" for e in endpoint.events]
        entry: dict[str, Any] = {
            "name": endpoint.slug,
            "provider": endpoint.provider,
            "event": events[0] if len(events) == 1 else events,
            "secret": _reference_for(endpoint),  # the reference, never the value
            "job": endpoint.job.name,
            "enabled": endpoint.enabled,
            "rate_limit": endpoint.rate_limit_per_minute,
        }
        if endpoint.branch:
            entry["branch"] = endpoint.branch
        if endpoint.filters:
            entry["filters"] = dict(endpoint.filters)
        if endpoint.input_template:
            entry["input"] = dict(endpoint.input_template)
        if endpoint.max_body_bytes:
            entry["max_body"] = endpoint.max_body_bytes
        entries.append(entry)
    return entries


def _events(value: Any, provider: str) -> list[str] | None:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(e, str) and e for e in items):
        return None
    return [e.removeprefix(f"{provider}.") for e in items]


def _desired(entry: Mapping[str, Any], index: int, ctx: automation.PlanContext) -> dict[str, Any] | None:
    """The endpoint fields an entry asks for (the secret resolved), or None after reporting why not."""
    before = len(ctx.errors)
    name = entry.get("name")
    try:
        validate_slug(name if isinstance(name, str) else "")
        if len(str(name)) > 100:
            raise ValidationError("too long")
    except ValidationError:
        ctx.error(KEY, index, "name", "a slug (letters, digits, - and _), at most 100 characters")
    provider = entry.get("provider")
    if provider not in PROVIDERS:
        ctx.error(KEY, index, "provider", f"{provider!r} is not one of {' | '.join(PROVIDERS)}")
        provider = ""
    events = _events(entry.get("event", "*"), str(provider))
    if events is None:
        ctx.error(KEY, index, "event", 'a name ("github.push") or a list of names')
    secret_ref = entry.get("secret")
    secret, env_name = "", ""
    match = _REFERENCE.match(secret_ref) if isinstance(secret_ref, str) else None
    if match is None:
        ctx.error(KEY, index, "secret", 'a reference "${ENV_VAR}" (a secret is never written in the file)')
    else:
        env_name = match.group(1)
        secret = os.environ.get(env_name, "")
        if not secret:
            ctx.error(KEY, index, "secret", f"the environment variable {env_name} is not set")
    job = entry.get("job")
    if not isinstance(job, str) or job not in ctx.job_names:
        ctx.error(KEY, index, "job", f"no job named {job!r} (neither existing nor declared in the file)")
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        ctx.error(KEY, index, "enabled", "true or false")
    branch = entry.get("branch", "")
    if not isinstance(branch, str):
        ctx.error(KEY, index, "branch", "a branch name or glob")
    filters = entry.get("filters", {})
    if not isinstance(filters, dict):
        ctx.error(KEY, index, "filters", 'a table of field = value, e.g. {action = "opened"}')
    templates = entry.get("input", {})
    if not isinstance(templates, dict) or not all(isinstance(v, str) for v in templates.values()):
        ctx.error(KEY, index, "input", "a table of name = template text")
    else:
        problem = check_templates(templates)
        if problem:
            ctx.error(KEY, index, "input", problem)
    rate = entry.get("rate_limit", 600)
    if not isinstance(rate, int) or isinstance(rate, bool) or rate < 0:
        ctx.error(KEY, index, "rate_limit", "a whole number of deliveries a minute (0: no limit)")
    max_body = entry.get("max_body")
    if max_body is not None and (not isinstance(max_body, int) or isinstance(max_body, bool) or max_body < 1):
        ctx.error(KEY, index, "max_body", "a size in bytes, at least 1")
    if len(ctx.errors) > before:
        return None
    return {
        "slug": name,
        "provider": provider,
        "events": events,
        "secret": secret,
        "secret_env": env_name,
        "job_name": job,
        "enabled": enabled,
        "branch": branch,
        "filters": filters,
        "input_template": templates,
        "rate_limit_per_minute": rate,
        "max_body_bytes": max_body,
    }


_COMPARED = ("provider", "events", "secret_env", "enabled", "branch", "filters", "input_template",
             "rate_limit_per_minute", "max_body_bytes")  # fmt: skip


def _differences(endpoint: Endpoint, want: Mapping[str, Any]) -> list[str]:
    detail = [
        f"{name} {getattr(endpoint, name)!r} → {want[name]!r}"
        for name in _COMPARED
        if getattr(endpoint, name) != want[name]
    ]
    if endpoint.job.name != want["job_name"]:
        detail.append(f"job {endpoint.job.name} → {want['job_name']}")
    if endpoint.secret != want["secret"]:
        detail.append("secret changed")  # never the values
    return detail


def plan(entries: Sequence[Mapping[str, Any]], ctx: automation.PlanContext) -> list[automation.Change]:
    changes: list[automation.Change] = []
    existing = {e.slug: e for e in Endpoint.objects.select_related("job")}
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        want = _desired(entry, index, ctx)
        if want is None:
            continue
        if want["slug"] in seen:
            ctx.error(KEY, index, "name", f"{want['slug']!r} is declared twice")
            continue
        seen.add(want["slug"])
        current = existing.get(want["slug"])
        if current is None:
            changes.append(
                automation.Change(
                    "create", "webhook", want["slug"], f"{want['provider']} → job {want['job_name']}"
                )
            )
        else:
            differences = _differences(current, want)
            if differences:
                changes.append(automation.Change("change", "webhook", want["slug"], "; ".join(differences)))
    if ctx.prune:
        changes += [automation.Change("remove", "webhook", slug) for slug in sorted(set(existing) - seen)]
    return changes


def apply(entries: Sequence[Mapping[str, Any]], ctx: automation.PlanContext) -> None:
    seen = set()
    for index, entry in enumerate(entries):
        want = _desired(entry, index, ctx)
        if want is None:  # plan reported it; apply is only called when nothing failed
            raise automation.ConfigError(ctx.errors)
        job = Job.objects.get(name=want.pop("job_name"))
        slug = want.pop("slug")
        seen.add(slug)
        endpoint = Endpoint.objects.filter(slug=slug).first() or Endpoint(slug=slug)
        for name, value in want.items():
            setattr(endpoint, name, value)
        endpoint.job = job
        endpoint.full_clean()
        endpoint.save()
    if ctx.prune:
        Endpoint.objects.exclude(slug__in=seen).delete()
