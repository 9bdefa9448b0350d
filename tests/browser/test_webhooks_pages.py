"""Triggers › Webhooks in a browser: the endpoints list (with the Schedules / Webhooks / File
watches tabs), an endpoint's page, the admin's new / edit form with a validation error shown
beside its field, the delivery log with its filters, a delivery's page and its Redeliver button
from the keyboard. Light and dark, 390 px and 1400 px: nothing scrolls sideways; screenshots in
test-artifacts/. The deliveries are real requests through the intake (signed as each sender signs)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest

from tests.support.browser import assert_fits, login, off_loop, page_checked, screenshot
from tests.support.webhooks import new_secret, request_for

pytestmark = [pytest.mark.browser, pytest.mark.redis]

GITHUB_SECRET = "browser-github-secret-never-shown-0123456789"


def deliver(endpoint, secret: str | None = None, **kw) -> int:
    """One signed request through the intake, as the view hands it over; its HTTP status."""
    from webhooks import intake

    body, headers = request_for(endpoint.provider, secret or endpoint.secret, **kw)
    return intake.receive(
        endpoint.slug,
        headers,
        lambda n: body[:n],
        content_length=len(body),
        content_type="application/json",
    ).status


def make_webhooks() -> dict[str, int]:
    """Four endpoints (one rotating its secret, one disabled, one never called) and deliveries of
    each verdict the log shows: accepted with its run, a duplicate, ignored, a bad signature."""
    from scheduler.models import Job
    from webhooks.models import Delivery, Endpoint

    review = Job.objects.create(name="review-every-pull-request-of-the-monorepo", kind="noop")
    triage = Job.objects.create(name="slack-triage", kind="noop")
    github = Endpoint.objects.create(
        slug="github-pull-requests-of-the-monorepo", provider="github", secret=GITHUB_SECRET,
        events=["pull_request", "push"], filters={"action": "opened"}, branch="main", job=review,
        input_template={"repository": "{{ payload.repository.full_name }}", "pr": "{{ payload.number }}",
                        "diff": "{{ payload.pull_request.diff_url }}"},
    )  # fmt: skip
    github.rotate_secret(GITHUB_SECRET + "-next", timedelta(hours=12))
    slack = Endpoint.objects.create(
        slug="slack-mentions",
        provider="slack",
        secret=new_secret("slack"),
        events=["app_mention"],
        job=triage,
    )
    stripe = Endpoint.objects.create(
        slug="stripe-invoices", provider="stripe", secret=new_secret("stripe"), events=["invoice.paid"],
        job=triage, enabled=False,
    )  # fmt: skip
    Endpoint.objects.create(
        slug="never-called", provider="hmac", secret=new_secret("hmac"), events=["*"], job=triage
    )
    first = uuid.uuid4().hex + "-" + uuid.uuid4().hex  # a long delivery id
    assert deliver(github, delivery=first) == 202
    assert deliver(github, delivery=first) == 200  # the sender's retry: a duplicate
    assert deliver(github, event="issues") == 200  # an event it does not run: ignored
    assert deliver(github, secret="not-the-secret") == 401
    assert deliver(slack) == 202
    assert deliver(stripe) == 404  # disabled: recorded
    accepted = Delivery.objects.get(endpoint=github, verdict="accepted")
    return {"github": github.pk, "slack": slack.pk, "accepted": accepted.pk, "review": review.pk}


def fitted_page(chromium, width: int, scheme: str):
    context = chromium.new_context(
        viewport={"width": width, "height": 844 if width < 800 else 900}, color_scheme=scheme
    )
    return context, context.new_page()


@pytest.mark.parametrize("width", [390, 1400])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_webhooks_pages_fit_a_phone_and_a_desktop_in_light_and_dark(
    redis_prefix, chromium, live_server_url, operator, scheme, width
):
    ids = off_loop(make_webhooks)
    context, page = fitted_page(chromium, width, scheme)
    try:
        login(page, live_server_url, "operator", "operator-pass")
        page.goto(f"{live_server_url}/triggers/webhooks/")
        page.wait_for_load_state("networkidle")
        tabs = page.get_by_role("navigation", name="Triggers")
        assert tabs.locator("a[aria-current=page]").inner_text() == "Webhooks"
        assert page.locator("#endpoints tbody tr[id^=endpoint-]").count() == 4
        row = page.locator(f"#endpoint-{ids['github']}").inner_text()
        assert "/webhooks/github-pull-requests-of-the-monorepo/" in row and "pull_request, push" in row
        assert "none yet" in page.locator("#endpoints").inner_text()  # never-called
        page_checked(page, "webhooks", width, scheme)

        page.get_by_role("link", name="github-pull-requests-of-the-monorepo", exact=True).click()
        page.wait_for_load_state("networkidle")
        settings_text = page.locator("#endpoint-settings").inner_text()
        assert "the previous one is valid until" in settings_text and "main" in settings_text
        assert GITHUB_SECRET not in page.content()
        assert page.locator("#deliveries tbody tr[id^=delivery-]").count() == 4
        page_checked(page, "webhook", width, scheme)

        page.goto(f"{live_server_url}/triggers/webhooks/deliveries/")
        page.wait_for_load_state("networkidle")
        assert page.locator("#deliveries tbody tr[id^=delivery-]").count() == 6
        page_checked(page, "webhook-deliveries", width, scheme)

        page.goto(f"{live_server_url}/triggers/webhooks/deliveries/{ids['accepted']}/")
        page.wait_for_load_state("networkidle")
        assert "masked" in page.locator("#headers").inner_text()  # the signature header
        assert "acme/app" in page.locator("#delivery-body").inner_text()
        assert page.locator("#redeliver").is_enabled()
        page_checked(page, "webhook-delivery", width, scheme)
    finally:
        context.close()


@pytest.mark.parametrize("width", [390, 1400])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_endpoint_form_shows_a_bad_field_beside_it_and_keeps_what_was_typed(
    redis_prefix, chromium, live_server_url, admin_user, scheme, width
):
    from webhooks.models import Endpoint

    ids = off_loop(make_webhooks)
    context, page = fitted_page(chromium, width, scheme)
    try:
        login(page, live_server_url, "boss", "boss-pass")
        page.goto(f"{live_server_url}/triggers/webhooks/")
        page.locator("#new-endpoint").click()
        page.wait_for_url("**/triggers/webhooks/new")
        assert page.locator("#id_secret").get_attribute("type") == "password"
        assert_fits(page, "webhook-form", width, scheme)
        screenshot(page, f"webhook-form-{width}-{scheme}")

        page.fill("#id_slug", "stripe-paid")
        page.select_option("#id_provider", "stripe")
        page.fill("#id_secret", "whsec_typed_secret")
        page.fill("#id_events", "[]")
        page.select_option("#id_job", str(ids["review"]))
        page.locator("#endpoint-form button[type=submit]").click()
        page.wait_for_load_state("networkidle")
        error = page.locator("#field-events .field-error")  # beside its field ...
        assert "name at least one event" in error.inner_text()
        events = page.locator("#id_events")
        assert events.get_attribute("aria-invalid") == "true"
        assert "id_events_error" in events.get_attribute("aria-describedby")  # ... read with it
        summary = page.locator("#form-errors[role=alert]")  # and named at the top, with a link
        assert "name at least one event" in summary.inner_text()
        assert page.input_value("#id_slug") == "stripe-paid"  # nothing typed is lost ...
        assert page.input_value("#id_secret") == ""  # ... but the secret is never sent back
        assert not Endpoint.objects.filter(slug="stripe-paid").exists()
        assert_fits(page, "webhook-form-error", width, scheme)
        screenshot(page, f"webhook-form-error-{width}-{scheme}")
        summary.get_by_role("link", name="Events").click()
        assert page.evaluate("document.activeElement.id") == "id_events"

        page.goto(f"{live_server_url}/triggers/webhooks/{ids['github']}/edit")
        assert page.input_value("#id_slug") == "github-pull-requests-of-the-monorepo"
        assert page.input_value("#id_secret") == "" and GITHUB_SECRET not in page.content()
        assert json.loads(page.input_value("#id_filters")) == {"action": "opened"}
        assert_fits(page, "webhook-edit", width, scheme)
        screenshot(page, f"webhook-edit-{width}-{scheme}")
    finally:
        context.close()


def test_the_log_filters_and_a_redelivery_work_from_the_keyboard(
    redis_prefix, chromium, live_server_url, operator
):
    from scheduler.models import AuditEntry
    from webhooks.models import Delivery

    ids = off_loop(make_webhooks)
    context, page = fitted_page(chromium, 1400, "light")
    try:
        login(page, live_server_url, "operator", "operator-pass")
        page.goto(f"{live_server_url}/triggers/webhooks/deliveries/")
        # The filters by keyboard: pick the endpoint and the verdict, then Enter on the button.
        page.focus("#log-endpoint")
        page.select_option("#log-endpoint", str(ids["github"]))
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "log-verdict"
        page.select_option("#log-verdict", "bad_signature")
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent.trim()") == "Filter"
        page.keyboard.press("Enter")
        page.wait_for_url("**verdict=bad_signature**")
        rows = page.locator("#deliveries tbody tr[id^=delivery-]")
        assert rows.count() == 1 and "Bad signature" in rows.inner_text()
        page.get_by_role("link", name="Clear").click()
        page.wait_for_load_state("networkidle")
        assert page.locator("#deliveries tbody tr[id^=delivery-]").count() == 6
        page.select_option("#log-since", "1h")
        page.select_option("#log-verdict", "accepted")
        page.locator("form.filters button").click()
        page.wait_for_url("**since=1h**")
        assert page.locator("#deliveries tbody tr[id^=delivery-]").count() == 2

        # A delivery's page; its Redeliver button from the keyboard (a confirm first).
        page.goto(f"{live_server_url}/triggers/webhooks/deliveries/{ids['accepted']}/")
        page.once("dialog", lambda dialog: dialog.accept())
        page.focus("#redeliver")
        page.keyboard.press("Enter")
        page.wait_for_selector("text=Redelivered as delivery")
        redelivery = Delivery.objects.get(redelivery_of_id=ids["accepted"])
        assert page.url.endswith(f"/triggers/webhooks/deliveries/{redelivery.pk}/")
        assert redelivery.run_id and redelivery.run_id != Delivery.objects.get(pk=ids["accepted"]).run_id
        assert AuditEntry.objects.get(action="webhook.redeliver").result == "ok"
        assert_fits(page, "webhook-redelivered", 1400, "light")
        screenshot(page, "webhook-redelivered-1400-light")
    finally:
        context.close()
