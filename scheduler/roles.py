"""Who may do what: three roles, each a Django group holding the engine's permissions.

* **viewer**: reads every page and the API; no control. A logged-in user in no group is a viewer.
* **operator**: a viewer who may also control: send a chat, abort a run, run a batch now (and the
  later pause / resume / requeue). Permission ``scheduler.operate``.
* **admin**: an operator who may also administer: the audit log, API tokens of any role (and the
  later emergency stop). Permissions ``scheduler.operate`` + ``scheduler.administer``. A superuser
  is always an admin.

The groups and permissions are created by ``scheduler/migrations/0003`` and assigned in the admin
(Users › Groups); ``assign()`` does it from code. Every control checks ``can(user, capability)``
server-side, whatever the page shows.
"""

from __future__ import annotations

import enum
import threading
import time
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save

from .models import AuditEntry

APP_LABEL = "scheduler"  # the permissions live on AuditEntry's Meta (scheduler.models)


class Role(enum.IntEnum):
    """Ordered: a higher role may do everything a lower one may (``min()`` gives the weaker)."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str) -> Role:
        try:
            return cls[value.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {value!r}: use {', '.join(r.label for r in cls)}") from None

    @classmethod
    def choices(cls) -> list[tuple[str, str]]:
        return [(r.label, r.label.capitalize()) for r in cls]


# A capability is what a control asks for; each role's group holds the permissions of its own
# capabilities (the migration freezes a copy of this table).
CAPABILITIES: dict[str, Role] = {"read": Role.VIEWER, "operate": Role.OPERATOR, "administer": Role.ADMIN}
PERMISSIONS: dict[str, str] = {
    "operate": "Operate: send chats, abort runs, run batches now",
    "administer": "Administer: audit log, API tokens, emergency stop",
}
GROUP_PERMISSIONS: dict[Role, list[str]] = {
    Role.VIEWER: [],
    Role.OPERATOR: ["operate"],
    Role.ADMIN: ["operate", "administer", "view_auditentry"],
}


def role_of(user: Any) -> Role | None:
    """The user's role, or ``None`` for an anonymous or inactive user (who may do nothing).

    ``is_active`` and ``is_superuser`` are read from ``user`` as loaded; what its permissions
    (own and groups') make of it is remembered per process for ``AGENTFLOW_ROLE_CACHE_SECONDS``
    (:class:`RoleCache`)."""
    if user is None or isinstance(user, AnonymousUser) or not user.is_authenticated or not user.is_active:
        return None
    if user.is_superuser:
        return Role.ADMIN
    return CACHE.get(user)


def _role_from_permissions(user: Any) -> Role:
    if user.has_perm(f"{APP_LABEL}.administer"):
        return Role.ADMIN
    if user.has_perm(f"{APP_LABEL}.operate"):
        return Role.OPERATOR
    return Role.VIEWER


class RoleCache:
    """Each user's role from their permissions, per process, for at most ``seconds``.

    The lookup is two statements (the user's and the groups' permissions) and was a fifth of a
    ``POST /api/v1/runs/`` (bench/README.md). A change made through the ORM in this process (a
    user's groups or permissions, a group's permissions, a user saved or deleted, a group deleted,
    a permission saved or deleted) drops what it may have changed at once; a change made in
    another process (another web instance, the admin served elsewhere) or by raw SQL is seen
    within ``seconds``. Each change drops it again when its transaction commits, and a value
    read while an invalidation ran is not kept. ``seconds`` 0 turns the cache off.
    """

    def __init__(self) -> None:
        self._roles: dict[int, tuple[Role, float]] = {}
        self._generation = 0
        self._lock = threading.Lock()

    def get(self, user: Any) -> Role:
        seconds = settings.AGENTFLOW_ROLE_CACHE_SECONDS
        if seconds <= 0:
            return _role_from_permissions(user)
        now = time.monotonic()
        found = self._roles.get(user.pk)
        if found is not None and found[1] > now:
            return found[0]
        generation = self._generation
        role = _role_from_permissions(user)
        with self._lock:
            if generation == self._generation:
                self._roles[user.pk] = (role, now + seconds)
        return role

    def forget(self, user_pk: Any = None) -> None:
        """Drop one user's role (``user_pk``), or every role."""
        with self._lock:
            self._generation += 1
            if user_pk is None:
                self._roles.clear()
            else:
                self._roles.pop(user_pk, None)


CACHE = RoleCache()


def _forget(user_pk: Any = None) -> None:
    """Now, and again when the change commits: a request of this process that read the old
    rows between the two (the change not yet committed) must not keep them."""
    CACHE.forget(user_pk)
    transaction.on_commit(lambda: CACHE.forget(user_pk))


def _user_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    _forget(instance.pk)


def _memberships_changed(
    sender: Any, instance: Any, model: Any, pk_set: Any, reverse: bool, **kwargs: Any
) -> None:
    if kwargs.get("action") not in ("post_add", "post_remove", "post_clear", "pre_clear"):
        return
    user_model = get_user_model()
    if isinstance(instance, user_model) and not reverse:
        _forget(instance.pk)  # user.groups / user.user_permissions
    elif model is user_model and pk_set:
        for pk in pk_set:  # group.user_set / permission.user_set
            _forget(pk)
    else:
        _forget()  # a group's permissions (or a clear from the other side): anyone's role


def _everyone_changed(sender: Any, **kwargs: Any) -> None:
    _forget()


def connect_signals() -> None:
    """Invalidate the role cache on the changes that can change a role (SchedulerConfig.ready)."""
    user_model = get_user_model()
    uid = "scheduler-roles"
    post_save.connect(_user_changed, sender=user_model, dispatch_uid=f"{uid}-user-saved")
    post_delete.connect(_user_changed, sender=user_model, dispatch_uid=f"{uid}-user-deleted")
    for through in (
        user_model.groups.through,
        user_model.user_permissions.through,
        Group.permissions.through,
    ):
        m2m_changed.connect(_memberships_changed, sender=through, dispatch_uid=f"{uid}-{through.__name__}")
    for model in (Group, Permission):
        post_delete.connect(_everyone_changed, sender=model, dispatch_uid=f"{uid}-{model.__name__}-deleted")
    post_save.connect(_everyone_changed, sender=Permission, dispatch_uid=f"{uid}-permission-saved")


def allows(role: Role | None, capability: str) -> bool:
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}")
    return role is not None and role >= CAPABILITIES[capability]


def can(user: Any, capability: str) -> bool:
    """``can(request.user, "operate")``: may this user use a control that needs ``capability``?"""
    return allows(role_of(user), capability)


def refusal(role: Role | None, capability: str) -> str:
    """The sentence an operator reads when a control is refused (page, API and websocket alike)."""
    needed = CAPABILITIES[capability]
    if role is None:
        return "Log in first."
    return (
        f"This needs the {needed.label} role; you are a {role.label}. "
        "An administrator can change your role in the admin (Users › Groups)."
    )


def ensure_group(role: Role) -> Group:
    """The role's group with exactly its permissions, created if missing (the migration made them;
    a test database flushed between tests has lost them)."""
    group, _ = Group.objects.get_or_create(name=role.label)
    content_type = ContentType.objects.get_for_model(AuditEntry)
    perms = []
    for codename in GROUP_PERMISSIONS[role]:
        name = PERMISSIONS.get(codename, "Can view audit entry")
        perm, _ = Permission.objects.get_or_create(
            content_type=content_type, codename=codename, defaults={"name": name}
        )
        perms.append(perm)
    group.permissions.set(perms)
    return group


def assign(user: Any, role: Role) -> None:
    """Put ``user`` in exactly one role group (the other roles' groups are left)."""
    role_groups = Group.objects.filter(name__in=[r.label for r in Role])
    user.groups.remove(*role_groups)
    user.groups.add(ensure_group(role))
    # has_perm caches the user's permissions on the instance.
    for attr in ("_perm_cache", "_group_perm_cache", "_user_perm_cache"):
        user.__dict__.pop(attr, None)
