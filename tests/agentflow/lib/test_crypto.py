"""Secrets at rest: gateway tokens are Fernet-encrypted in the database, read back in Python,
and re-encrypted with the first key by ``manage.py rotate_encryption_key``."""

from __future__ import annotations

import io
import logging

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.db import connection

from agentflow.lib import crypto
from agentflow.lib.fields import UnreadableSecret
from fleet.models import Gateway
from tests.support.factories import make_gateway

TOKEN = "gw-token-at-rest-4c2f9a1e"  # a marker to look for in the raw column


def raw_token(pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT token FROM dashboard_gateway WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def test_the_raw_column_does_not_hold_the_token(db):
    gateway = make_gateway("alpha", token=TOKEN)
    stored = raw_token(gateway.pk)
    assert TOKEN not in stored
    assert stored.startswith("fernet:")
    assert Gateway.objects.get(pk=gateway.pk).token == TOKEN
    assert Gateway.objects.values_list("token", flat=True).get(pk=gateway.pk) == TOKEN


def test_each_write_is_a_fresh_ciphertext_and_an_empty_token_stays_empty(db):
    a = make_gateway("a", token=TOKEN)
    b = make_gateway("b", token=TOKEN)
    empty = make_gateway("c", token="")
    assert raw_token(a.pk) != raw_token(b.pk)
    assert raw_token(empty.pk) == ""


def test_a_plain_token_written_before_encryption_still_reads_and_is_encrypted_on_save(db):
    gateway = make_gateway("legacy", token="x")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE dashboard_gateway SET token = %s WHERE id = %s", [TOKEN, gateway.pk])
    gateway = Gateway.objects.get(pk=gateway.pk)
    assert gateway.token == TOKEN
    gateway.save()
    assert raw_token(gateway.pk).startswith("fernet:")


def test_every_configured_key_decrypts_and_the_first_one_encrypts(db, settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.ENCRYPTION_KEYS = [old]
    gateway = make_gateway("alpha", token=TOKEN)
    settings.ENCRYPTION_KEYS = [new, old]
    assert Gateway.objects.get(pk=gateway.pk).token == TOKEN
    stored = raw_token(gateway.pk)[len(crypto.PREFIX) :]
    assert Fernet(old.encode()).decrypt(stored.encode()).decode() == TOKEN
    make_gateway("beta", token=TOKEN)
    written = raw_token(Gateway.objects.get(name="beta").pk)[len(crypto.PREFIX) :]
    assert Fernet(new.encode()).decrypt(written.encode()).decode() == TOKEN


def test_rotate_encryption_key_rewrites_every_secret_with_the_first_key(db, settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.ENCRYPTION_KEYS = [old]
    gateways = [make_gateway(f"gw{n}", token=f"{TOKEN}-{n}") for n in range(3)]
    make_gateway("none", token="")
    settings.ENCRYPTION_KEYS = [new, old]
    out = io.StringIO()
    call_command("rotate_encryption_key", stdout=out)
    assert "fleet.Gateway.token: 3 secret(s) re-encrypted" in out.getvalue()
    settings.ENCRYPTION_KEYS = [new]  # the old key can go now
    for n, gateway in enumerate(gateways):
        assert Gateway.objects.get(pk=gateway.pk).token == f"{TOKEN}-{n}"
        assert TOKEN not in out.getvalue()


def test_rotation_changes_nothing_when_a_secret_cannot_be_opened(db, settings):
    lost, kept = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.ENCRYPTION_KEYS = [lost]
    orphan = make_gateway("orphan", token=TOKEN)
    settings.ENCRYPTION_KEYS = [kept]
    fine = make_gateway("fine", token=TOKEN)
    before = {g.pk: raw_token(g.pk) for g in (orphan, fine)}
    with pytest.raises(CommandError, match=rf"nothing was changed.*fleet\.Gateway\.token pk {orphan.pk}"):
        call_command("rotate_encryption_key", stdout=io.StringIO())
    assert {g.pk: raw_token(g.pk) for g in (orphan, fine)} == before


def test_an_unreadable_token_reads_empty_logs_no_secret_and_survives_a_save(db, settings, caplog):
    lost = Fernet.generate_key().decode()
    settings.ENCRYPTION_KEYS = [lost]
    gateway = make_gateway("orphan", token=TOKEN)
    stored = raw_token(gateway.pk)
    settings.ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with caplog.at_level(logging.ERROR, logger="agentflow.crypto"):
        loaded = Gateway.objects.get(pk=gateway.pk)
    assert isinstance(loaded.token, UnreadableSecret) and loaded.token == ""
    assert "cannot be decrypted" in caplog.text and stored not in caplog.text
    loaded.name = "orphan-renamed"
    loaded.save()
    assert raw_token(gateway.pk) == stored  # put the key back and the token is there again
    settings.ENCRYPTION_KEYS = [lost]
    assert Gateway.objects.get(pk=gateway.pk).token == TOKEN


def test_the_dev_key_is_stable_and_a_bad_key_is_named_by_position():
    assert crypto.derive_key("s" * 50) == crypto.derive_key("s" * 50)
    assert crypto.derive_key("s" * 50) != crypto.derive_key("t" * 50)
    Fernet(crypto.derive_key("anything").encode())  # a valid Fernet key
    with pytest.raises(ValueError, match="key #2 is not a Fernet key"):
        crypto.check_keys([crypto.generate_key(), "short"])
