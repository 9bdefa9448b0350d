from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from dashboard.models import ApiToken
from scheduler import audit
from scheduler.roles import Role, role_of


class Command(BaseCommand):
    help = (
        "Issue an API token for a user and print it once (only its hash is stored). The token's role "
        "(viewer by default) is at most the user's: a viewer's admin token still only reads."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="What the token is for, e.g. 'ops script'.")
        parser.add_argument("--user", required=True, help="The username the token acts for.")
        parser.add_argument("--role", choices=[r.label for r in Role], default=Role.VIEWER.label)

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"].strip()
        if not name or len(name) > 100:
            raise CommandError("The token's name must be 1 to 100 characters.")
        user = get_user_model().objects.filter(username=options["user"]).first()
        if user is None:
            raise CommandError(f"No user named {options['user']!r}.")
        if not user.is_active:
            raise CommandError(f"User {user.get_username()!r} is inactive: its tokens would not work.")
        try:
            role = Role.parse(options["role"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        token, raw = ApiToken.issue(user, name, role)
        audit.record(
            "api_token.issue",
            audit.Actor.command("create_api_token"),
            audit.Target("api_token", str(token.pk), f"{token} for {user} as {role.label}"),
        )
        self.stdout.write(raw)
        own = role_of(user)
        if own is not None and own < role:
            self.stderr.write(
                self.style.WARNING(
                    f"{user.get_username()!r} is a {own.label}: "
                    f"this {role.label} token acts as a {own.label}."
                )
            )
        self.stderr.write(f"Token {token.prefix}… for {user.get_username()!r} ({role.label}): shown once.")
