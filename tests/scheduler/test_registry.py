"""scheduler.registry: a batch is defined once; the engine finds it by id and never imports its app."""

from __future__ import annotations

import pytest

from scheduler import registry
from scheduler.registry import BatchSpec, Scope
from scheduler.runner import Outcome


def noop(_target) -> Outcome:
    return Outcome("nothing")


def test_the_fleet_registers_the_five_batches_with_their_defaults():
    specs = {spec.id: spec for spec in registry.batches()}
    assert list(specs) == ["BATCH-001", "BATCH-002", "BATCH-003", "BATCH-004", "BATCH-005"]
    assert [specs[b].every_seconds for b in ("BATCH-001", "BATCH-002", "BATCH-003", "BATCH-005")] == [
        10,
        30,
        5,
        60,
    ]
    assert specs["BATCH-004"].crontab == ("0", "3") and specs["BATCH-004"].scope is None
    assert specs["BATCH-004"].alert_on_error and specs["BATCH-004"].lock_ttl == 3600
    assert {specs[b].scope for b in ("BATCH-001", "BATCH-002", "BATCH-003", "BATCH-005")} == {"gateway"}
    assert specs["BATCH-001"].task_name == "BATCH-001 Session polling"


def test_a_spec_needs_exactly_one_default_schedule():
    with pytest.raises(ValueError, match="exactly one of every_seconds and crontab"):
        BatchSpec("X-1", "Neither", noop)
    with pytest.raises(ValueError, match="exactly one of every_seconds and crontab"):
        BatchSpec("X-1", "Both", noop, every_seconds=5, crontab=("0", "1"))


def test_registering_a_different_batch_under_a_taken_id_is_refused():
    taken = registry.get("BATCH-001")
    registry.register_batch(taken)  # the same spec again (a second ready()) is harmless
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_batch(BatchSpec("BATCH-001", "Impostor", noop, every_seconds=1))
    assert registry.get("BATCH-001") is taken


def test_a_new_batch_kind_is_a_registration_not_a_migration(monkeypatch):
    monkeypatch.setattr(registry, "_batches", dict(registry._batches))
    spec = registry.register_batch(BatchSpec("X-NEW", "Brand new", noop, every_seconds=7))
    assert registry.find("X-NEW") is spec and "X-NEW" in registry.batch_ids()


def test_unknown_ids_and_scopes_say_what_is_known():
    with pytest.raises(ValueError, match="unknown batch 'BATCH-999'"):
        registry.get("BATCH-999")
    assert registry.find("BATCH-999") is None
    with pytest.raises(LookupError, match=r"unknown scope 'planet' \(registered: gateway\)"):
        registry.scope("planet")


def test_a_scope_lists_loads_and_names_its_targets(monkeypatch):
    monkeypatch.setattr(registry, "_scopes", dict(registry._scopes))
    things = {1: "one", 2: "two"}
    registry.register_scope(Scope("thing", ids=lambda: list(things), load=things.get, label=str.upper))
    scope = registry.scope("thing")
    assert list(scope.ids()) == [1, 2] and scope.load(2) == "two" and scope.label("two") == "TWO"
