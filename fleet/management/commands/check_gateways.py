from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from fleet.models import Gateway
from fleet.services import probe
from openclaw import GatewayError


class Command(BaseCommand):
    help = "Connect to each enabled gateway (or the named ones), time a config.get and record the status."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("names", nargs="*")
        parser.add_argument("--timeout", type=float, default=5.0)

    def handle(self, *args: Any, names: list[str], timeout: float, **options: Any) -> None:
        gateways = Gateway.objects.enabled()
        if names:
            gateways = gateways.filter(name__in=names)
            missing = set(names) - set(gateways.values_list("name", flat=True))
            if missing:
                raise CommandError(f"No enabled gateway named: {', '.join(sorted(missing))}")
        failures = 0
        for gateway in gateways:
            try:
                latency = probe(gateway, timeout=timeout)
            except GatewayError as exc:
                failures += 1
                self.stdout.write(
                    f"{gateway.name}: {gateway.get_status_display()} [{exc.log_code}] {exc.operator_message}"
                )
            else:
                self.stdout.write(
                    f"{gateway.name}: {gateway.get_status_display()}, {latency:.1f} ms, "
                    f"version {gateway.version}"
                    + (f" ({gateway.status_reason})" if gateway.status_reason else "")
                )
        if failures:
            raise SystemExit(1)
