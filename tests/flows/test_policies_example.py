"""examples/flows/policies.yaml behaves as docs/flows.md shows: the same failing step under each
preset, and passing with the context it needs."""

from __future__ import annotations

import pytest

from flows import api
from flows.models import Span

pytestmark = [pytest.mark.django_db, pytest.mark.redis]
FLOW = "examples/flows/policies.yaml"


@pytest.fixture(autouse=True)
def _prefix(redis_prefix):
    pass


def steps_of(result) -> list[tuple[str, str, int]]:
    spans = Span.objects.filter(run_id=result.run_id, kind="step").order_by("start_ns")
    return [(s.name, s.status, s.attributes["flow.step.attempts"]) for s in spans]


def test_dev_retries_twice_and_continues_to_the_summary():
    result = api.run(FLOW, {})
    assert result.status == "succeeded"
    assert steps_of(result) == [
        ("step greet", "ok", 1),
        ("step lookup", "error", 2),
        ("step summary", "ok", 1),
    ]
    assert "no ticket found" in result.report and "lookup: bad reference ctx.ticket.id" in result.report


@pytest.mark.parametrize(("preset", "attempts"), [("prod", 1), ("staging", 3)])
def test_prod_and_staging_go_to_human_support(preset, attempts):
    result = api.run(FLOW, {}, preset=preset)
    assert result.status == "succeeded"
    assert steps_of(result) == [
        ("step greet", "ok", 1), ("step lookup", "error", attempts), ("step human_support", "ok", 1)
    ]  # fmt: skip
    assert result.context["support"]["escalated"] is True and "summary" not in result.context


def test_with_the_ticket_in_the_context_every_preset_passes():
    for preset in ("dev", "staging", "prod"):
        result = api.run(FLOW, {"ticket": {"id": 7}}, preset=preset)
        assert result.context["summary"]["json"]["changes"] == ["ticket #7"], preset
        assert "escalated" not in result.context["support"]
