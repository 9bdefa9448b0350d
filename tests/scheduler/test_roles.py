"""scheduler.roles' role cache: a role read from permissions is kept per process for
AGENTFLOW_ROLE_CACHE_SECONDS; every change made through the ORM in this process applies at once,
any other change within those seconds; is_active and is_superuser are never cached."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.db import connection

from scheduler import roles
from scheduler.roles import Role

pytestmark = pytest.mark.django_db


def fresh(user: User) -> User:
    """The user as a new request loads it (no per-instance permission cache)."""
    return User.objects.get(pk=user.pk)


def test_a_role_is_read_once_then_kept(operator, django_assert_num_queries):
    user = fresh(operator)
    with django_assert_num_queries(2):  # the user's and the groups' permissions
        assert roles.role_of(user) is Role.OPERATOR
    user = fresh(operator)
    with django_assert_num_queries(0):
        assert roles.role_of(user) is Role.OPERATOR


@pytest.mark.parametrize(
    "change",
    [
        lambda user: roles.assign(user, Role.VIEWER),
        lambda user: user.groups.clear(),
        lambda user: Group.objects.get(name="operator").user_set.remove(user),
        lambda user: Group.objects.get(name="operator").permissions.clear(),
        lambda user: Permission.objects.get(codename="operate").group_set.clear(),
        lambda user: Group.objects.get(name="operator").delete(),
        lambda user: Permission.objects.get(codename="operate").delete(),
    ],
    ids=[
        "assign",
        "user-groups",
        "group-users",
        "group-permissions",
        "permission-groups",
        "group",
        "permission",
    ],
)
def test_a_demotion_made_in_this_process_applies_at_once(operator, change):
    assert roles.role_of(fresh(operator)) is Role.OPERATOR
    change(fresh(operator))
    assert roles.role_of(fresh(operator)) is Role.VIEWER


def test_a_promotion_made_in_this_process_applies_at_once(viewer):
    assert roles.role_of(fresh(viewer)) is Role.VIEWER
    operate = Permission.objects.get(codename="operate")
    fresh(viewer).user_permissions.add(operate)
    assert roles.role_of(fresh(viewer)) is Role.OPERATOR
    operate.user_set.remove(viewer)
    assert roles.role_of(fresh(viewer)) is Role.VIEWER


def test_a_change_no_signal_reports_is_seen_within_the_cache_seconds(operator, settings):
    settings.AGENTFLOW_ROLE_CACHE_SECONDS = 0.3
    assert roles.role_of(fresh(operator)) is Role.OPERATOR
    User.groups.through.objects.filter(user=operator).delete()  # another process, or raw SQL
    assert roles.role_of(fresh(operator)) is Role.OPERATOR  # the documented lag
    time.sleep(0.35)
    assert roles.role_of(fresh(operator)) is Role.VIEWER


def test_no_cache_with_zero_seconds(operator, settings):
    settings.AGENTFLOW_ROLE_CACHE_SECONDS = 0
    assert roles.role_of(fresh(operator)) is Role.OPERATOR
    User.groups.through.objects.filter(user=operator).delete()
    assert roles.role_of(fresh(operator)) is Role.VIEWER


def test_active_and_superuser_are_read_from_the_user_as_loaded(viewer):
    assert roles.role_of(fresh(viewer)) is Role.VIEWER
    User.objects.filter(pk=viewer.pk).update(is_superuser=True)  # no signal
    assert roles.role_of(fresh(viewer)) is Role.ADMIN
    User.objects.filter(pk=viewer.pk).update(is_active=False)
    assert roles.role_of(fresh(viewer)) is None


def test_a_role_read_while_a_change_ran_is_not_kept(operator):
    """A request that read the old role while another thread changed it must not store it: here
    the change (its invalidation) lands while the permission query runs."""
    user = fresh(operator)

    def change_lands(execute, sql, params, many, context):
        roles.CACHE.forget(operator.pk)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(change_lands):
        assert roles.role_of(user) is Role.OPERATOR  # what it read
    assert operator.pk not in roles.CACHE._roles  # not kept: the next check reads again
    assert roles.role_of(fresh(operator)) is Role.OPERATOR
    assert operator.pk in roles.CACHE._roles


def test_a_role_read_before_the_change_commits_is_dropped_at_the_commit(
    operator, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        roles.assign(fresh(operator), Role.VIEWER)  # in a transaction not yet committed
        roles.CACHE._roles[operator.pk] = (Role.OPERATOR, time.monotonic() + 60)  # another request read it
    assert roles.role_of(fresh(operator)) is Role.VIEWER
