"""fleet.apps: what the fleet registers with the layers below it when Django starts."""

from __future__ import annotations

import pytest

from agentflow.lib import metrics
from scheduler import registry
from scheduler.models import BatchRun
from tests.support.factories import make_batch_run, make_gateway

pytestmark = pytest.mark.django_db


def test_deleting_a_gateway_deletes_its_batch_runs_and_keeps_the_others():
    alpha, beta = make_gateway("alpha"), make_gateway("beta")
    make_batch_run("BATCH-001", alpha)
    make_batch_run("BATCH-005", alpha)
    kept = make_batch_run("BATCH-001", beta)
    global_run = make_batch_run("BATCH-004")
    alpha.delete()
    assert set(BatchRun.objects.values_list("pk", flat=True)) == {kept.pk, global_run.pk}


def test_the_gateway_scope_lists_only_enabled_gateways_and_loads_them_by_id():
    on, off = make_gateway("on"), make_gateway("off", enabled=False)
    scope = registry.scope("gateway")
    assert list(scope.ids()) == [on.pk]
    assert scope.load(on.pk) == on and scope.load(off.pk) is None and scope.load(10**6) is None
    assert scope.label(on) == "on"


def test_metrics_collectors_are_registered_once_per_kind():
    kinds = [type(c).__name__ for c in metrics._collectors]
    assert {"FleetCollector", "BatchCollector", "DroppedCollector"} <= set(kinds)
    assert len(kinds) == len(set(kinds))
