"""The UI's own data: API tokens for the JSON API. Everything else lives in the apps below."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from django.db import models

from scheduler import roles
from scheduler.roles import Role


class ApiToken(models.Model):
    """A bearer token for the JSON API. Only its SHA-256 is stored.

    It carries a role (viewer by default); what it may do is the weaker of that role and its
    user's (``effective_role``), so a token never outranks the person who holds it.
    """

    user = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    role = models.CharField(
        max_length=10,
        choices=Role.choices(),
        default=Role.VIEWER.label,
        help_text="At most its user's role: an operator's admin token acts as an operator.",
    )
    prefix = models.CharField(max_length=12, editable=False)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash(raw: str) -> str:
        return hashlib.sha256(raw.encode()).hexdigest()

    @classmethod
    def issue(cls, user: Any, name: str, role: Role = Role.VIEWER) -> tuple[ApiToken, str]:
        """Create a token; the raw value is returned once and never stored."""
        raw = "af_" + secrets.token_urlsafe(32)
        token = cls.objects.create(
            user=user, name=name, role=role.label, prefix=raw[:10], token_hash=cls.hash(raw)
        )
        return token, raw

    @property
    def effective_role(self) -> Role | None:
        own = roles.role_of(self.user)
        return None if own is None else min(Role.parse(self.role), own)
