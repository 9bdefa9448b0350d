from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from fleet.services import register_gateway


class Command(BaseCommand):
    help = (
        "Register (or update) a gateway. Defaults come from AGENTFLOW_GATEWAY_URL, AGENTFLOW_GATEWAY_TOKEN "
        "and AGENTFLOW_GATEWAY_NAME. The token is never printed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", default=os.environ.get("AGENTFLOW_GATEWAY_NAME") or "default")
        parser.add_argument("--url", default=os.environ.get("AGENTFLOW_GATEWAY_URL"))
        parser.add_argument(
            "--token-file", help="Read the token from this file (default: AGENTFLOW_GATEWAY_TOKEN)."
        )

    def handle(self, *args: Any, name: str, url: str | None, token_file: str | None, **options: Any) -> None:
        token = os.environ.get("AGENTFLOW_GATEWAY_TOKEN", "")
        if token_file:
            try:
                token = Path(token_file).read_text().strip()
            except OSError as exc:
                raise CommandError(
                    f"Cannot read the token file {token_file}: {exc.strerror or exc}"
                ) from None
        if not url:
            raise CommandError("No gateway URL: pass --url or set AGENTFLOW_GATEWAY_URL.")
        if not url.startswith(("ws://", "wss://")):
            raise CommandError(f"The gateway URL must start with ws:// or wss:// (got {url!r}).")
        if not token:
            raise CommandError("No gateway token: pass --token-file or set AGENTFLOW_GATEWAY_TOKEN.")
        gateway, outcome = register_gateway(name, url, token)
        self.stdout.write(f"Gateway {gateway.name!r} {outcome}: {gateway.url}")
