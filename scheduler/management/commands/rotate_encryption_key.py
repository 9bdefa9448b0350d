"""Re-encrypt every stored secret with the first key of AGENTFLOW_ENCRYPTION_KEYS.

It lives in the lowest app because it is generic: it finds every ``EncryptedTextField`` of the
installed apps (gateway tokens today, webhook secrets later) through the app registry.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from agentflow.lib.fields import rotate_all


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret with the first key of AGENTFLOW_ENCRYPTION_KEYS "
        "(run it after putting a new key first; then the old key can be removed)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Check every secret opens; write nothing.")

    def handle(self, *args: Any, dry_run: bool, **options: Any) -> None:
        results = rotate_all(dry_run=dry_run)
        unreadable = [r for r in results if r.unreadable]
        for r in results:
            self.stdout.write(
                f"{r.label}: {r.rewritten} secret(s) {'readable' if dry_run else 're-encrypted'}"
            )
        if unreadable:
            detail = "; ".join(f"{r.label} pk {', '.join(map(str, r.unreadable))}" for r in unreadable)
            raise CommandError(
                f"nothing was changed: no configured key opens {detail}. "
                "Add the key they were written with to AGENTFLOW_ENCRYPTION_KEYS and run again."
            )
        if not dry_run:
            self.stdout.write("done: every secret is now encrypted with the first key")
