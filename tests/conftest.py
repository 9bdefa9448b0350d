"""Shared test harness: a real OpenClaw gateway (session-scoped), real Redis, a small cast.

Nothing here skips: when the gateway cannot be installed or started, the tests that need it
error out with the reason, so CI can never pass without having exercised it.
"""

from __future__ import annotations

import secrets

import pytest
from django.conf import settings

from demo.gateway import DemoGateway, ensure_installed
from tests.support.ports import free_port_block


@pytest.fixture(scope="session", autouse=True)
def _close_shared_thread_connections(django_db_setup, django_db_blocker):
    """Async tests reach the ORM through asgiref's one shared sync thread (sync_to_async outside
    any async_to_sync), and that thread's connection would stay open to the end, so PostgreSQL
    refused to drop the test database ("being accessed by other users"). Close it first."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    with django_db_blocker.unblock():
        SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=30)


@pytest.fixture(autouse=True)
def _no_roles_from_an_earlier_test():
    """scheduler.roles keeps roles per process by user id; a test's rollback (or a bulk_create)
    sends no signal, and the next test's user may get the same id."""
    from scheduler import roles

    roles.CACHE.forget()


@pytest.fixture(autouse=True)
def _engine_hooks_left_as_found():
    """A test that swaps one of the engine's hooks (scheduler.errors) must put back what was
    there: a test once put back the default instead of fleet's provider-blocked hook, and every
    later provider-auth test in a random order blocked without an alert."""
    from scheduler import errors

    before = dict(errors._hooks)
    yield
    assert errors._hooks == before, "this test left scheduler.errors hooks changed"


@pytest.fixture
def own_queues(redis_prefix):
    """The engine's messages this process sends go to queues of this test's own (the default
    queue and the priority queues named after its Redis prefix), deleted afterwards."""
    from agentflow.celery import app
    from tests.support.celery import engine_queues

    previous = app.conf.task_default_queue
    app.conf.task_default_queue = redis_prefix
    try:
        yield redis_prefix
    finally:
        app.conf.task_default_queue = previous
        with app.connection_for_write() as connection:
            client = connection.default_channel.client
            for name in engine_queues(redis_prefix):
                client.delete(name, f"_kombu.binding.{name}")


@pytest.fixture(scope="session")
def openclaw(tmp_path_factory) -> DemoGateway:
    """The real, pinned OpenClaw gateway on loopback with three agents and the stub model."""
    ensure_installed()
    gateway = DemoGateway(tmp_path_factory.mktemp("openclaw"), free_port_block(), token=secrets.token_hex(16))
    gateway.start(timeout=120)
    yield gateway
    gateway.stop()


@pytest.fixture
def live_openclaw(openclaw: DemoGateway) -> DemoGateway:
    """The session gateway, restarted first if an earlier test stopped it."""
    if not openclaw.is_running():
        openclaw.start(timeout=120)
    return openclaw


@pytest.fixture
def gateway_row(db, live_openclaw):
    from tests.support.factories import make_gateway

    return make_gateway("test-gw", url=live_openclaw.url, token=live_openclaw.token)


@pytest.fixture
def redis_client():
    from agentflow.lib.redis import get_redis

    client = get_redis()
    client.ping()
    yield client
    for key in client.scan_iter(f"{settings.REDIS_PREFIX}:*"):
        client.delete(key)


@pytest.fixture
def operator(db, django_user_model):
    """A user in the operator group: reads everything, may send chats and abort runs."""
    from scheduler import roles

    user = django_user_model.objects.create_user("operator", password="operator-pass")
    roles.assign(user, roles.Role.OPERATOR)
    return user


@pytest.fixture
def viewer(db, django_user_model):
    """A user in the viewer group: reads everything, controls nothing."""
    from scheduler import roles

    user = django_user_model.objects.create_user("viewer", password="viewer-pass")
    roles.assign(user, roles.Role.VIEWER)
    return user


@pytest.fixture
def admin_user(db, django_user_model):
    return django_user_model.objects.create_superuser("boss", password="boss-pass")


@pytest.fixture
def redis_prefix(settings):
    """A Redis namespace of this test's own: locks, metrics, open panels, sequence numbers and
    channel-layer groups of concurrent test runs (or of a ``make run``) never mix with ours."""
    from tests.support.redis import isolated_redis

    with isolated_redis(settings) as prefix:
        yield prefix
