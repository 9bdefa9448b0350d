"""Model fields of the plumbing: :class:`EncryptedTextField` for secrets at rest.

The column holds ``fernet:<token>`` (see :mod:`agentflow.lib.crypto`); Python code only ever
sees the plain value. Because Fernet tokens are random, the field cannot be filtered on: compare
in Python after loading the row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.db import connections, models, transaction

from . import crypto

log = logging.getLogger("agentflow.crypto")


class UnreadableSecret(str):
    """A stored secret no configured key opens: reads as "" and, saved back, keeps the stored
    ciphertext, so restoring the missing key gets the secret back (nothing is lost)."""

    stored: str

    def __new__(cls, stored: str) -> UnreadableSecret:
        value = super().__new__(cls, "")
        value.stored = stored
        return value


class EncryptedTextField(models.TextField):
    """A text secret (a gateway token, a webhook secret) encrypted at rest with the first key of
    ``AGENTFLOW_ENCRYPTION_KEYS``; never put it in a form's initial data, a template or a log."""

    description = "Text encrypted at rest (Fernet)"

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        if value is None:
            return value
        try:
            return crypto.decrypt(value)
        except crypto.DecryptionError:
            log.error(
                "%s.%s: a stored secret cannot be decrypted with AGENTFLOW_ENCRYPTION_KEYS "
                "(add back the key it was written with)",
                self.model._meta.label if hasattr(self, "model") else "?",
                self.name,
            )
            return UnreadableSecret(value)

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value is None:
            return value
        if isinstance(value, UnreadableSecret):
            return value.stored
        return crypto.encrypt(str(value))


def encrypted_fields() -> list[tuple[type[models.Model], EncryptedTextField]]:
    """Every (model, field) of the installed apps that holds an encrypted secret."""
    return [
        (model, field)
        for model in apps.get_models()
        for field in model._meta.concrete_fields
        if isinstance(field, EncryptedTextField)
    ]


@dataclass
class Rotation:
    label: str  # "fleet.Gateway.token"
    rewritten: int
    unreadable: list[Any]  # primary keys no configured key opens


def rotate_all(using: str = "default", *, dry_run: bool = False) -> list[Rotation]:
    """Re-encrypt every stored secret with the first key, in one transaction.

    1. Read each column's raw stored value (not through the field, to tell plain from encrypted).
    2. Decrypt with any configured key; a value none opens is listed and nothing is written.
    3. Write the plain value back through ``update()``, which encrypts it with the first key.
    """
    results: list[Rotation] = []
    connection = connections[using]
    with transaction.atomic(using=using):
        for model, field in encrypted_fields():
            table = connection.ops.quote_name(model._meta.db_table)
            pk_column = connection.ops.quote_name(str(model._meta.pk.column))
            column = connection.ops.quote_name(str(field.column))
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT {pk_column}, {column} FROM {table}")  # noqa: S608 - quoted names
                rows = cursor.fetchall()
            rotation = Rotation(f"{model._meta.label}.{field.name}", 0, [])
            plain: dict[Any, str] = {}
            for pk, stored in rows:
                if not stored:
                    continue
                try:
                    plain[pk] = crypto.decrypt(stored)
                except crypto.DecryptionError:
                    rotation.unreadable.append(pk)
            if not rotation.unreadable and not dry_run:
                manager = model._base_manager.using(using)
                for pk, value in plain.items():
                    manager.filter(pk=pk).update(**{field.attname: value})
            rotation.rewritten = len(plain)
            results.append(rotation)
        if dry_run or any(r.unreadable for r in results):
            transaction.set_rollback(True, using=using)
    return results
