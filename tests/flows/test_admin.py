"""Stored flows in the admin: validated before they are saved, named by their YAML; flow runs
read-only."""

from __future__ import annotations

import pytest
from django.urls import reverse

from flows.models import Flow

pytestmark = pytest.mark.django_db

GOOD = (
    "name: stored_one\ndescription: A stored flow.\nsteps:\n  - {id: a, type: set, with: {values: {x: 1}}}\n"
)


@pytest.fixture
def staff_client(client, admin_user):
    client.force_login(admin_user)
    return client


def test_a_valid_flow_is_saved_under_its_yaml_name(staff_client):
    response = staff_client.post(reverse("admin:flows_flow_add"), {"source": GOOD, "path": ""})
    assert response.status_code == 302
    flow = Flow.objects.get()
    assert (flow.name, flow.description) == ("stored_one", "A stored flow.")


def test_an_invalid_flow_is_refused_with_every_problem(staff_client):
    bad = "name: bad\nsteps:\n  - {id: a, type: teleport}\n  - {id: a, type: set}\n"
    response = staff_client.post(reverse("admin:flows_flow_add"), {"source": bad, "path": ""})
    assert response.status_code == 200
    text = response.content.decode()
    assert "unknown type" in text and "duplicate id" in text
    assert Flow.objects.count() == 0


def test_a_second_flow_with_the_same_name_is_refused(staff_client):
    Flow.objects.create(name="stored_one", source=GOOD)
    response = staff_client.post(reverse("admin:flows_flow_add"), {"source": GOOD, "path": ""})
    assert response.status_code == 200 and "already named" in response.content.decode()


def test_the_flow_run_list_renders_and_cannot_add(staff_client):
    assert staff_client.get(reverse("admin:flows_flowrun_changelist")).status_code == 200
    assert staff_client.get(reverse("admin:flows_flowrun_add")).status_code == 403
