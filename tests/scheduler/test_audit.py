"""The control audit and the roles (scheduler.audit, scheduler.roles, migration 0003): who may
do what, what each control writes, and that the migration creates the groups and permissions."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from scheduler import audit, roles
from scheduler.models import AuditEntry
from scheduler.roles import Role

pytestmark = pytest.mark.django_db

TARGET = audit.Target("session", "3:agent:main:main", "prod / agent:main:main")


@pytest.fixture
def admin_in_group(django_user_model):
    user = django_user_model.objects.create_user("alice")
    roles.assign(user, Role.ADMIN)
    return user


def test_each_role_is_its_group_and_a_plain_user_is_a_viewer(
    django_user_model, viewer, operator, admin_in_group, admin_user
):
    plain = django_user_model.objects.create_user("plain")
    assert roles.role_of(plain) is Role.VIEWER
    assert roles.role_of(viewer) is Role.VIEWER
    assert roles.role_of(operator) is Role.OPERATOR
    assert roles.role_of(admin_in_group) is Role.ADMIN
    assert roles.role_of(admin_user) is Role.ADMIN  # a superuser, in no group
    assert roles.role_of(None) is None
    operator.is_active = False
    assert roles.role_of(operator) is None


@pytest.mark.parametrize(
    ("role", "read", "operate", "administer"),
    [
        (None, False, False, False),
        (Role.VIEWER, True, False, False),
        (Role.OPERATOR, True, True, False),
        (Role.ADMIN, True, True, True),
    ],
)
def test_what_each_role_may_do(role, read, operate, administer):
    assert [roles.allows(role, c) for c in ("read", "operate", "administer")] == [read, operate, administer]


def test_an_unknown_capability_or_role_is_an_error_not_a_silent_no():
    with pytest.raises(ValueError, match="unknown capability"):
        roles.allows(Role.ADMIN, "operat")
    with pytest.raises(ValueError, match="use viewer, operator, admin"):
        Role.parse("root")
    assert Role.parse(" Operator ") is Role.OPERATOR


def test_assign_moves_a_user_between_roles_and_applies_at_once(django_user_model):
    user = django_user_model.objects.create_user("bob")
    roles.assign(user, Role.OPERATOR)
    assert roles.can(user, "operate")
    roles.assign(user, Role.VIEWER)
    assert not roles.can(user, "operate")  # no stale permission cache on the instance
    assert list(user.groups.values_list("name", flat=True)) == ["viewer"]


def test_an_allowed_control_runs_and_writes_one_ok_row(operator):
    ran = []
    actor = audit.Actor.of_user(operator, source="web", ip_address="127.0.0.1")
    with audit.control("chat.abort", actor, TARGET, reason="stuck run") as ctl:
        ran.append(True)
        ctl.note("abort requested")
    assert ran == [True]
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.actor_label, entry.action, entry.result) == (
        operator,
        "operator",
        "chat.abort",
        "ok",
    )
    assert (entry.target_type, entry.target_id, entry.target_label) == (
        "session",
        "3:agent:main:main",
        "prod / agent:main:main",
    )
    assert (entry.reason, entry.message, entry.source, entry.ip_address) == (
        "stuck run",
        "abort requested",
        "web",
        "127.0.0.1",
    )


def test_a_refused_control_never_runs_and_is_recorded(viewer):
    ran = []
    with (
        pytest.raises(audit.Refused) as refused,
        audit.control("chat.send", audit.Actor.of_user(viewer), TARGET),
    ):
        ran.append(True)
    assert ran == []
    assert "needs the operator role; you are a viewer" in refused.value.message
    entry = AuditEntry.objects.get()
    assert (entry.result, entry.actor, entry.message) == ("refused", viewer, refused.value.message)


def test_an_error_in_the_body_is_recorded_and_raised(operator):
    with (
        pytest.raises(RuntimeError, match="boom"),
        audit.control("chat.send", audit.Actor.of_user(operator), TARGET),
    ):
        raise RuntimeError("boom")
    entry = AuditEntry.objects.get()
    assert (entry.result, entry.message) == ("error", "boom")


@pytest.mark.django_db(transaction=True)  # autocommit, as in a request: the rollback is real
def test_an_atomic_control_commits_its_work_with_its_row_or_neither(operator):
    from django.db import OperationalError

    from scheduler import ops
    from scheduler.models import Run

    actor = audit.Actor.of_user(operator, source="api")
    run, created = ops.submit(actor, kind="noop", params={})
    assert created and AuditEntry.objects.get().message == f"run {run.pk} queued"

    refused = []

    def busy_audit_insert(execute, sql, params, many, context):
        if sql.startswith('INSERT INTO "scheduler_auditentry"') and not refused:
            refused.append(sql)
            raise OperationalError("database is locked")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(busy_audit_insert), pytest.raises(OperationalError, match="locked"):
        ops.submit(actor, kind="noop", params={})
    assert refused
    assert list(Run.objects.values_list("pk", flat=True)) == [run.pk]  # the second run was undone
    last = AuditEntry.objects.order_by("-id").first()
    assert (last.action, last.result, last.message) == ("run.enqueue", "error", "database is locked")


def test_an_expected_failure_is_an_error_row_without_an_exception(operator):
    with audit.control("chat.send", audit.Actor.of_user(operator), TARGET) as ctl:
        ctl.fail("The gateway is offline.")
    assert AuditEntry.objects.get().result == "error"


def test_administer_needs_an_admin(operator, admin_user):
    with (
        pytest.raises(audit.Refused),
        audit.control("api_token.revoke", audit.Actor.of_user(operator), needs="administer"),
    ):
        pass
    with audit.control("api_token.revoke", audit.Actor.of_user(admin_user), needs="administer"):
        pass
    assert list(AuditEntry.objects.order_by("id").values_list("result", flat=True)) == ["refused", "ok"]


def test_an_actor_with_a_role_gets_at_most_its_users_role(viewer, admin_user):
    # An API token: its own role bounds the user's, never raises it.
    assert audit.Actor.of_user(viewer, role=Role.ADMIN).effective_role is Role.VIEWER
    assert audit.Actor.of_user(admin_user, role=Role.VIEWER).effective_role is Role.VIEWER
    assert audit.Actor.of_user(admin_user, role=Role.OPERATOR).can("operate")
    assert not audit.Actor.of_user(admin_user, role=Role.OPERATOR).can("administer")


def test_the_system_and_commands_may_act_and_are_named():
    audit.record("batch.run", audit.Actor.system())
    audit.record("api_token.issue", audit.Actor.command("create_api_token"))
    assert audit.Actor.system().can("administer")
    labels = list(AuditEntry.objects.order_by("id").values_list("actor_label", "source", "actor"))
    assert labels == [("system", "system", None), ("command create_api_token", "command", None)]


def test_the_audit_keeps_its_rows_when_the_actor_is_deleted(operator):
    audit.record("chat.abort", audit.Actor.of_user(operator), TARGET)
    operator.delete()
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.actor_label) == (None, "operator")


@pytest.mark.django_db(transaction=True)
def test_migration_0003_creates_the_groups_with_their_permissions():
    """Migrated back and forth for real: the groups and permissions come from the migration
    (created explicitly, not by post_migrate), and go with it."""
    executor = MigrationExecutor(connection)
    leaves = executor.loader.graph.leaf_nodes()  # every app: going back drops the apps built on scheduler
    executor.migrate([("scheduler", "0002_batch_registry_and_alert")])
    assert not Group.objects.filter(name__in=["viewer", "operator", "admin"]).exists()
    assert not Permission.objects.filter(content_type__app_label="scheduler", codename="operate").exists()
    executor = MigrationExecutor(connection)
    executor.migrate(leaves)
    perms = {
        g.name: sorted(g.permissions.values_list("codename", flat=True))
        for g in Group.objects.filter(name__in=["viewer", "operator", "admin"])
    }
    assert perms == {
        "viewer": [],
        "operator": ["operate"],
        "admin": ["administer", "operate", "view_auditentry"],
    }
    # Every app's tables are back (going back dropped webhooks', executor's…; later tests need them).
    tables = set(connection.introspection.table_names())
    assert {m._meta.db_table for m in apps.get_models() if m._meta.managed} <= tables
    # The frozen copy in the migration and scheduler.roles agree.
    assert {r.label: sorted(roles.GROUP_PERMISSIONS[r]) for r in Role} == perms
