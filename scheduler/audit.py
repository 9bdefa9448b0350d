"""The control audit: every control action writes one ``AuditEntry``, allowed or refused.

A control is a function with an audit row (ARCHITECTURE.md): the page, the API, the websocket,
the admin and a management command call the same domain function inside :func:`control`, which
checks the actor's role first and records how it ended::

    actor = audit.Actor.of_user(request.user, source="web", ip_address=ip)
    with audit.control("chat.abort", actor, audit.Target("session", key, label)) as ctl:
        services.abort_chat(...)          # raises: recorded as "error", re-raised
        ctl.fail("gateway said no")       # or: an expected failure, recorded as "error"

A refused actor never runs the body: the refusal is recorded and :class:`Refused` raised (a
``PermissionDenied``: the edge answers 403 with its message). ``record()`` writes a row
directly, for anything else.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction

from . import roles
from .models import AuditEntry
from .roles import Role

log = logging.getLogger("agentflow.audit")

Result = AuditEntry.Result


@dataclass(frozen=True)
class Actor:
    """Who acts. ``role`` is the effective role when it is not the user's own (an API token's
    role is at most its user's); ``None`` means "the user's role"."""

    user: Any = None
    label: str = "system"
    source: str = ""
    ip_address: str | None = None
    role: Role | None = None

    @classmethod
    def of_user(
        cls,
        user: Any,
        *,
        source: str = "",
        ip_address: str | None = None,
        label: str | None = None,
        role: Role | None = None,
    ) -> Actor:
        authenticated = user is not None and user.is_authenticated
        return cls(
            user=user if authenticated else None,
            label=label or (user.get_username() if authenticated else "anonymous"),
            source=source,
            ip_address=ip_address or None,
            role=role,
        )

    @classmethod
    def system(cls, label: str = "system", source: str = "system") -> Actor:
        """The engine itself (a batch, a beat tick): may do everything."""
        return cls(label=label, source=source, role=Role.ADMIN)

    @classmethod
    def command(cls, name: str, user: Any = None) -> Actor:
        """A management command run on the server: whoever runs it has the shell, so admin."""
        label = f"command {name}" + (f" ({user.get_username()})" if user is not None else "")
        return cls(user=user, label=label, source="command", role=Role.ADMIN)

    @property
    def effective_role(self) -> Role | None:
        if self.role is not None:
            own = roles.role_of(self.user) if self.user is not None else self.role
            return min(self.role, own) if own is not None else None
        return roles.role_of(self.user)

    def can(self, capability: str) -> bool:
        return roles.allows(self.effective_role, capability)


@dataclass(frozen=True)
class Target:
    """What is acted on: a type, an id (text: session keys are strings) and its label then."""

    type: str
    id: str = ""
    label: str = ""


class Refused(PermissionDenied):
    """The actor's role does not allow the control; ``message`` says which role it needs.

    A ``PermissionDenied``: a view that lets it through answers Django's 403 page with the
    message; the JSON API answers 403 JSON.
    """

    def __init__(self, message: str, entry: AuditEntry) -> None:
        super().__init__(message)
        self.message = message
        self.entry = entry


@dataclass
class Control:
    """What the body of :func:`control` may say about how it went."""

    message: str = ""
    failed: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def fail(self, message: str) -> None:
        """An expected failure (the gateway refused, bad input): recorded as ``error``."""
        self.failed, self.message = True, message

    def note(self, message: str) -> None:
        """A remark kept on a successful row (e.g. "run 42 queued")."""
        self.message = message


def record(
    action: str,
    actor: Actor,
    target: Target | None = None,
    *,
    result: str = Result.OK,
    reason: str = "",
    message: str = "",
) -> AuditEntry:
    target = target or Target("")
    entry = AuditEntry.objects.create(
        actor=actor.user if actor.user is not None and actor.user.pk else None,
        actor_label=actor.label[:200],
        action=action[:60],
        target_type=target.type[:40],
        target_id=str(target.id)[:255],
        target_label=target.label[:300],
        reason=reason,
        result=result,
        message=message,
        source=actor.source[:60],
        ip_address=actor.ip_address,
    )
    log.info(
        "audit %s by %s on %s %s: %s%s",
        action,
        actor.label,
        target.type or "-",
        target.label or target.id or "-",
        result,
        f" ({message})" if message else "",
    )
    return entry


@contextmanager
def control(
    action: str,
    actor: Actor,
    target: Target | None = None,
    *,
    needs: str = "operate",
    reason: str = "",
    atomic: bool = False,
) -> Iterator[Control]:
    """Run a control as ``actor``, recording one row.

    1. The actor's effective role must allow ``needs``; if not, record ``refused`` and raise
       :class:`Refused` before the body runs.
    2. The body runs with a :class:`Control`; ``ctl.fail(msg)`` ends it as ``error`` with msg.
    3. An exception from the body is recorded as ``error`` (its text) and re-raised.
    4. Otherwise the row says ``ok``.

    ``atomic``: the body's writes and the ``ok`` row commit together in one transaction (for a
    body that only writes the database, e.g. queueing a run): a database too busy for the row
    then undoes the body too, so a caller told "error" never finds the work done anyway. The
    ``error`` row is written after the rollback.
    """
    if not actor.can(needs):
        message = roles.refusal(actor.effective_role, needs)
        entry = record(action, actor, target, result=Result.REFUSED, reason=reason, message=message)
        raise Refused(message, entry)
    ctl = Control()

    def done() -> None:
        record(
            action,
            actor,
            target,
            result=Result.ERROR if ctl.failed else Result.OK,
            reason=reason,
            message=ctl.message,
        )

    try:
        if atomic:
            with transaction.atomic():
                yield ctl
                done()
        else:
            yield ctl
    except Exception as exc:
        text = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        # atomic: the body's note describes work that was just undone; the error says why
        message = text if atomic else ctl.message or text
        record(action, actor, target, result=Result.ERROR, reason=reason, message=message)
        raise
    if not atomic:
        done()
