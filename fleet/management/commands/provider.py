"""Blocked providers from the shell: ``manage.py provider list [--all]`` and
``manage.py provider unblock --gateway G --agent A --provider P [--reason R]``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from fleet import agent_runs
from scheduler import audit
from scheduler.models import ProviderBlock


class Command(BaseCommand):
    help = "List blocked-provider episodes or unblock one (audited; its blocked runs are requeued in order)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        listing = sub.add_parser("list", help="open episodes (--all: ended ones too)")
        listing.add_argument("--all", action="store_true")
        unblock = sub.add_parser("unblock", help="clear a block and requeue its runs")
        unblock.add_argument("--gateway", required=True, help="the gateway's id (as on the queue page)")
        unblock.add_argument("--agent", required=True)
        unblock.add_argument("--provider", default="")
        unblock.add_argument("--reason", default="")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        if action == "list":
            self.list(options["all"])
            return
        gateway, agent, provider = options["gateway"], options["agent"], options["provider"]
        if not agent_runs.is_blocked(gateway, agent, provider):
            raise CommandError(
                f"no open block for provider {provider or '-'} of agent {agent} on gateway {gateway} "
                "(see manage.py provider list)"
            )
        requeued = agent_runs.unblock(
            audit.Actor.command("provider"), gateway, agent, provider, reason=options["reason"]
        )
        self.stdout.write(
            f"unblocked provider {provider or '-'} of agent {agent}: {requeued} run(s) requeued"
        )

    def list(self, everything: bool) -> None:
        rows = ProviderBlock.objects.all() if everything else ProviderBlock.objects.open()
        if not rows.exists():
            self.stdout.write("no provider is blocked")
            return
        self.stdout.write(
            "gateway  agent            provider     state    since                runs  probes  last probe"
        )
        for row in rows:
            state = "blocked" if row.is_open else "ended"
            self.stdout.write(
                f"{row.gateway:<8} {row.agent:<16} {row.provider or '-':<12} {state:<8} "
                f"{row.started_at:%Y-%m-%d %H:%M:%S}  {row.runs_blocked:>4}  {row.probes:>6}  "
                f"{row.last_probe_result or '-'}"
            )
            if row.github_issue_url:
                self.stdout.write(f"         issue: {row.github_issue_url} ({row.github_issue_state or '?'})")
