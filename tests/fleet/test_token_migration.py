"""fleet 0002 encrypts the gateway tokens already stored: a gateway row made before the
migration, migrated, still connects to the real gateway; migrating back gives the plain token."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from fleet import services
from fleet.models import Gateway

BEFORE = [("fleet", "0001_initial")]


def raw_token(pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT token FROM dashboard_gateway WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def migrate(targets: list[tuple[str, str]] | None = None) -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(targets or executor.loader.graph.leaf_nodes())


@pytest.mark.gateway
@pytest.mark.django_db(transaction=True)
def test_a_gateway_made_before_the_migration_still_connects_after_it(live_openclaw):
    migrate(BEFORE)
    try:
        old_apps = MigrationExecutor(connection).loader.project_state(BEFORE).apps
        old = old_apps.get_model("fleet", "Gateway").objects.create(
            name="pre-encryption", url=live_openclaw.url, token=live_openclaw.token
        )
        assert raw_token(old.pk) == live_openclaw.token  # what the previous release stored

        migrate()
        stored = raw_token(old.pk)
        assert stored.startswith("fernet:") and live_openclaw.token not in stored

        gateway = Gateway.objects.get(pk=old.pk)
        assert gateway.token == live_openclaw.token
        services.probe(gateway)
        gateway.refresh_from_db()
        assert gateway.status == Gateway.Status.CONNECTED, gateway.status_reason

        migrate(BEFORE)  # backwards: the previous release gets its plain token back
        assert raw_token(old.pk) == live_openclaw.token
    finally:
        migrate()
