from __future__ import annotations

import os
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from scheduler import roles


class Command(BaseCommand):
    help = (
        "Create the admin user (a superuser in the admin group) from AGENTFLOW_ADMIN_USER / "
        "AGENTFLOW_ADMIN_PASSWORD, or with a generated password printed once. An existing user is left "
        "alone unless a password is given in the environment."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        username = os.environ.get("AGENTFLOW_ADMIN_USER") or "admin"
        password = os.environ.get("AGENTFLOW_ADMIN_PASSWORD")
        user = User.objects.filter(username=username).first()
        if user is not None:
            if user.is_superuser:  # already an admin; the group says so too (never promotes anyone)
                roles.assign(user, roles.Role.ADMIN)
            if password and not user.check_password(password):
                user.set_password(password)
                user.save(update_fields=["password"])
                self.stdout.write(f"Admin user {username!r}: password updated from AGENTFLOW_ADMIN_PASSWORD.")
            else:
                self.stdout.write(f"Admin user {username!r} exists.")
            return
        generated = not password
        password = password or secrets.token_urlsafe(12)
        user = User.objects.create_superuser(username=username, email="", password=password)
        roles.assign(user, roles.Role.ADMIN)
        if generated:
            self.stdout.write(
                self.style.WARNING(
                    f"Created admin user {username!r} with password: {password}\n"
                    "  (shown once; set AGENTFLOW_ADMIN_PASSWORD to choose it, or `manage.py changepassword`)"
                )
            )
        else:
            self.stdout.write(f"Created admin user {username!r} (password from AGENTFLOW_ADMIN_PASSWORD).")
