"""The Run a flow page: an operator starts a flow (a file under the roots or a stored one) with a
context, preset and tracer; bad input is a 400 that keeps what was typed; a viewer is refused."""

from __future__ import annotations

import pytest

from flows.models import Flow
from scheduler.models import AuditEntry, Run
from tests.support.html import dom

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

FLOW = "examples/flows/policies.yaml"


@pytest.fixture
def operator_client(client, operator, redis_prefix):
    client.force_login(operator)
    return client


def test_the_form_offers_the_flows_and_prefills_the_one_asked_for(operator_client):
    Flow.objects.create(name="stored_one", source="name: stored_one\nsteps:\n  - {id: a, type: set}\n")
    page = dom(operator_client.get("/flows/run/", {"flow": FLOW}))
    assert page.find("input", id="flow-ref").attrs["value"] == FLOW
    options = {o.attrs["value"] for o in page.find("datalist", id="flow-choices").find_all("option")}
    assert {"stored_one", FLOW} <= options


def test_an_operator_starts_a_flow_run_and_lands_on_its_trace(operator_client):
    response = operator_client.post(
        "/flows/run/", {"flow": FLOW, "context": '{"ticket": {"id": 7}}', "preset": "prod", "tracer": "none"}
    )
    run = Run.objects.get(kind="flow")
    assert response.status_code == 302 and response["Location"] == f"/runs/{run.pk}/trace/"
    assert run.params == {"flow": FLOW, "tracer": "none", "preset": "prod"}
    assert run.input == {"ticket": {"id": 7}}
    assert AuditEntry.objects.filter(action="run.enqueue", result="ok").count() == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"context": "{not json"}, "The context is not JSON"),
        ({"context": "[1, 2]"}, "The context must be a JSON object."),
        ({"preset": "nightly"}, "Unknown preset 'nightly'."),
        ({"tracer": "jaeger"}, "Unknown tracer 'jaeger'."),
        ({"flow": "examples/nope.yaml"}, "nope.yaml"),
    ],
)
def test_bad_input_is_a_400_naming_it_and_keeping_what_was_typed(operator_client, fields, message):
    data = {"flow": FLOW, "context": "{}", "preset": "", "tracer": "none", **fields}
    response = operator_client.post("/flows/run/", data)
    assert response.status_code == 400
    page = dom(response)
    assert message in page.find("div", id="form-errors").text
    assert page.find("textarea", id="flow-context").text == data["context"]
    assert not Run.objects.filter(kind="flow").exists()


def test_a_viewer_sees_the_form_disabled_and_is_refused(client, viewer, redis_prefix):
    client.force_login(viewer)
    page = dom(client.get("/flows/run/"))
    assert "needs the operator role" in page.text
    assert client.post("/flows/run/", {"flow": FLOW, "context": "{}", "tracer": "none"}).status_code == 403
    assert not Run.objects.filter(kind="flow").exists()
