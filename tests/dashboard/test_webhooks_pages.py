"""Triggers › Webhooks: the endpoints with their URL, provider, events, job and last delivery; an
endpoint's page (never its secret); the form (admin role, audited, a new secret is a rotation);
the delivery log with its filters; a delivery's page (masked headers, body, verdict, run) and its
Redeliver button (operators only, audited)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from scheduler.models import AuditEntry, Job, Run
from tests.support.html import dom
from tests.support.webhooks import new_secret
from tests.webhooks.conftest import make_endpoint, post
from webhooks.models import Delivery, Endpoint

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

SECRET = "page-secret-never-shown-0123456789"


@pytest.fixture(autouse=True)
def _isolated(redis_prefix):
    return redis_prefix


@pytest.fixture
def job(db):
    return Job.objects.create(name="review-pr", kind="noop")


@pytest.fixture
def hook(job):
    return make_endpoint(job, slug="gh-reviews", secret=SECRET, events=["pull_request", "push"])


def test_the_list_shows_each_endpoint_its_url_and_last_delivery(client, operator, hook, settings):
    settings.AGENTFLOW_PUBLIC_URL = "https://agentflow.example.test"
    post(client, hook, secret=SECRET)  # anonymous: the intake needs no login
    client.force_login(operator)
    page = dom(client.get("/triggers/webhooks/"))
    row = page.find("tr", id=f"endpoint-{hook.pk}")
    assert "https://agentflow.example.test/webhooks/gh-reviews/" in row.text
    assert "GitHub" in row.text and "pull_request, push" in row.text and "review-pr" in row.text
    assert row.find("span", cls="status").attrs["data-status"] == "accepted"
    # The nav's one Triggers link is current, and so is the Webhooks tab of the triggers' tabs.
    assert page.find("a", cls="nav-item", href="/triggers/").attrs.get("aria-current") == "page"
    tabs = page.find("nav", cls="tabs")
    assert tabs.find("a", href="/triggers/webhooks/").attrs.get("aria-current") == "page"
    assert "aria-current" not in tabs.find("a", href="/triggers/").attrs
    assert not page.has("a", id="new-endpoint")  # an operator does not administer
    assert SECRET not in client.get("/triggers/webhooks/").content.decode()


def test_the_empty_list_says_what_an_endpoint_is(client, admin_user):
    client.force_login(admin_user)
    page = dom(client.get("/triggers/webhooks/"))
    assert "No webhook endpoint yet." in page.text and page.has("a", id="new-endpoint")


def test_an_endpoints_page_shows_its_settings_but_never_its_secret(client, operator, hook):
    hook.rotate_secret(new_secret("github"), timedelta(hours=2))
    client.force_login(operator)
    response = client.get(f"/triggers/webhooks/{hook.pk}/")
    html = response.content.decode()
    assert SECRET not in html and hook.secret not in html
    page = dom(response)
    assert "/webhooks/gh-reviews/" in page.find(id="endpoint-url").text
    assert "the previous one is valid until" in page.find(id="endpoint-settings").text


def test_an_admin_creates_an_endpoint_on_the_page_and_it_is_audited(client, admin_user, job):
    client.force_login(admin_user)
    form = dom(client.get("/triggers/webhooks/new"))
    assert form.find("input", name="secret").attrs["type"] == "password"
    response = client.post(
        "/triggers/webhooks/new",
        {"slug": "stripe-paid", "provider": "stripe", "secret": "whsec_abc", "events": '["invoice.paid"]',
         "filters": "{}", "branch": "", "job": job.pk, "input_template": "{}", "enabled": "on",
         "rate_limit_per_minute": 60, "max_body_bytes": "", "keep_previous_hours": 24},
    )  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:2000]
    endpoint = Endpoint.objects.get(slug="stripe-paid")
    assert endpoint.secret == "whsec_abc" and endpoint.events == ["invoice.paid"]
    assert AuditEntry.objects.get(action="webhook.create").result == "ok"


def test_a_new_secret_on_the_form_is_a_rotation_and_blank_keeps_it(client, admin_user, hook, job):
    client.force_login(admin_user)
    data = {"slug": hook.slug, "provider": "github", "secret": "", "events": '["push"]', "filters": "{}",
            "branch": "main", "job": job.pk, "input_template": "{}", "enabled": "on",
            "rate_limit_per_minute": 600, "max_body_bytes": "", "keep_previous_hours": 1}  # fmt: skip
    assert client.post(f"/triggers/webhooks/{hook.pk}/edit", data).status_code == 302
    hook.refresh_from_db()
    assert hook.secret == SECRET and hook.branch == "main" and not hook.previous_secret
    assert (
        client.post(f"/triggers/webhooks/{hook.pk}/edit", {**data, "secret": "brand-new"}).status_code == 302
    )
    hook.refresh_from_db()
    assert hook.secret == "brand-new" and hook.previous_secret == SECRET
    assert (
        timezone.now() + timedelta(minutes=50)
        < hook.previous_secret_until
        < timezone.now() + timedelta(hours=2)
    )
    assert hook.valid_secrets() == ["brand-new", SECRET]


def test_the_form_refuses_bad_input_with_a_message(client, admin_user, job):
    client.force_login(admin_user)
    response = client.post(
        "/triggers/webhooks/new",
        {"slug": "x", "provider": "github", "secret": "s", "events": "[]", "filters": "{}", "job": job.pk,
         "input_template": '{"a": "{% if %}"}', "rate_limit_per_minute": 1},
    )  # fmt: skip
    assert response.status_code == 200
    text = dom(response).text
    assert "name at least one event" in text
    assert not Endpoint.objects.exists()


def test_an_operator_cannot_save_an_endpoint(client, operator, job):
    client.force_login(operator)
    response = client.post(
        "/triggers/webhooks/new",
        {"slug": "x", "provider": "github", "secret": "s", "events": '["push"]', "filters": "{}",
         "job": job.pk, "input_template": "{}", "rate_limit_per_minute": 1},
    )  # fmt: skip
    assert response.status_code == 403
    assert not Endpoint.objects.exists()
    assert AuditEntry.objects.get(action="webhook.create").result == "refused"


def test_the_delivery_log_filters_by_endpoint_verdict_and_time(client, operator, hook, job):
    other = make_endpoint(job, slug="slack-hook", provider="slack")
    post(client, hook, secret=SECRET)
    post(client, hook, secret="wrong")
    post(client, other)
    old = Delivery.objects.filter(endpoint=other).first()
    Delivery.objects.filter(pk=old.pk).update(received_at=timezone.now() - timedelta(days=2))
    client.force_login(operator)

    def rows(query: str) -> list[str]:
        page = dom(client.get(f"/triggers/webhooks/deliveries/{query}"))
        return [
            r.attrs["id"] for r in page.find("table", id="deliveries").find_all("tr") if r.attrs.get("id")
        ]

    assert len(rows("")) == 3
    assert len(rows(f"?endpoint={hook.pk}")) == 2
    assert len(rows("?verdict=bad_signature")) == 1
    assert rows("?since=24h") == [
        f"delivery-{d.pk}" for d in Delivery.objects.filter(endpoint=hook).order_by("-pk")
    ]
    assert len(rows("?verdict=nonsense&endpoint=abc&since=forever")) == 3  # unknown filters: ignored


def test_a_deliverys_page_shows_masked_headers_body_and_run_and_redelivers(client, operator, viewer, hook):
    post(client, hook, secret=SECRET)
    delivery = Delivery.objects.get()
    client.force_login(viewer)
    page = dom(client.get(f"/triggers/webhooks/deliveries/{delivery.pk}/"))
    assert "disabled" in page.find("button", id="redeliver").attrs
    headers = page.find("table", id="headers").text
    assert "masked" in headers and "sha256=" not in headers
    assert '"acme/app"' in page.find(id="delivery-body").text
    assert f"#{delivery.run_id}" in page.find(id="delivery-facts").text
    assert client.post(f"/triggers/webhooks/deliveries/{delivery.pk}/redeliver").status_code == 403

    client.force_login(operator)
    response = client.post(f"/triggers/webhooks/deliveries/{delivery.pk}/redeliver")
    again = Delivery.objects.exclude(pk=delivery.pk).get()
    assert (
        response.status_code == 302 and response["Location"] == f"/triggers/webhooks/deliveries/{again.pk}/"
    )
    assert again.redelivery_of_id == delivery.pk and Run.objects.count() == 2
    assert AuditEntry.objects.filter(action="webhook.redeliver", result="ok").count() == 1
    page = dom(client.get(f"/triggers/webhooks/deliveries/{delivery.pk}/"))
    assert f"#{again.pk}" in page.text


def test_a_refused_delivery_has_no_redeliver(client, operator, hook):
    post(client, hook, secret="wrong")
    client.force_login(operator)
    page = dom(client.get(f"/triggers/webhooks/deliveries/{Delivery.objects.get().pk}/"))
    button = page.find("button", id="redeliver")
    assert "disabled" in button.attrs and "verification" in button.attrs["title"]


def test_the_pages_need_a_login(client, hook):
    response = client.get("/triggers/webhooks/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
