from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from scheduler.schedules import ensure_schedules


class Command(BaseCommand):
    help = (
        "Create the registered batch schedules in django-celery-beat (idempotent; --reset restores defaults)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--reset", action="store_true", help="Overwrite operator changes with the defaults."
        )

    def handle(self, *args: Any, reset: bool, **options: Any) -> None:
        for name, created in ensure_schedules(reset=reset):
            self.stdout.write(f"{name}: {'created' if created else 'reset' if reset else 'exists'}")
