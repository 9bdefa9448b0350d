"""The Notifications page and the channel admin: channels with their last delivery, the delivery
log (filters, newest first, attempts), "Send test" (a POST with CSRF, operators only, audited,
against a real local receiver), and the channel secret never rendered anywhere."""

from __future__ import annotations

import logging

import pytest
from django.urls import reverse

from scheduler import notify
from scheduler.models import AuditEntry, Channel, Delivery, Notification
from tests.support.html import dom
from tests.support.receivers import eager_celery, make_channel, receiver, whsec

pytestmark = [pytest.mark.django_db]

SLACK_PATH = "/services/T0PAGE/B0PAGE/page-secret-slack-token"
GITHUB_TOKEN = "ghp_page_secret_token_abcdef0123"


@pytest.fixture
def web(client, operator):
    client.force_login(operator)
    return client


@pytest.fixture
def as_viewer(client, viewer):
    client.force_login(viewer)
    return client


@pytest.fixture
def staff_client(client, admin_user):
    client.force_login(admin_user)
    return client


def logged(channel: Channel, kind: str, status: str, **fields) -> Delivery:
    n = Notification.objects.create(kind=kind, subject=f"{kind} subject", level="info")
    return Delivery.objects.create(notification=n, channel=channel, status=status, **fields)


def test_the_page_without_channels_says_how_to_add_one(web):
    page = dom(web.get("/notifications/"))
    assert "No channel is configured yet." in page.text
    assert "Nothing was sent yet." in page.text
    nav = page.find("a", href="/notifications/")
    assert nav is not None and nav.attrs.get("aria-current") == "page"


def test_channels_show_kind_events_and_their_last_delivery(web):
    stops = make_channel(
        "stops", "webhook", url="http://127.0.0.1:9/in?token=abc", secret=whsec(), events=["stop.engaged"]
    )
    mails = make_channel("mails", "email", recipients="ops@example.com", enabled=False)
    logged(stops, "stop.engaged", "failed", error="POST http://127.0.0.1:9/…: HTTP 500")
    page = dom(web.get("/notifications/"))
    row = page.find("tr", id=f"channel-{stops.pk}")
    assert "Signed webhook" in row.text
    assert "Emergency stop engaged" in row.text and "http://127.0.0.1:9/…" in row.text
    assert "token=abc" not in page.text  # the URL's query is not shown
    assert row.find("span", cls="status").attrs["data-status"] == "failed"
    other = page.find("tr", id=f"channel-{mails.pk}")
    assert "all events" in other.text and "disabled" in other.text and "none yet" in other.text


def test_the_delivery_log_is_newest_first_and_filters(web):
    a = make_channel("a", "email", recipients="a@example.com")
    b = make_channel("b", "email", recipients="b@example.com")
    old = logged(a, "job.failed", "sent", response_status=200)
    new = logged(b, "alert.raised", "pending", attempts=2, response_status=503, error="HTTP 503")
    page = dom(web.get("/notifications/"))
    rows = page.find("table", id="deliveries").find("tbody").find_all("tr")
    assert [r.attrs["id"] for r in rows] == [f"delivery-{new.pk}", f"delivery-{old.pk}"]
    assert "HTTP 503" in rows[0].text and "Alert raised" in rows[0].text
    for query, expected in [
        (f"?channel={a.pk}", [old]),
        ("?status=pending", [new]),
        ("?kind=job.failed", [old]),
        ("?status=bogus&channel=99999&kind=nope", [new, old]),  # unknown filters are ignored
    ]:
        rows = (
            dom(web.get("/notifications/" + query))
            .find("table", id="deliveries")
            .find("tbody")
            .find_all("tr")
        )
        assert [r.attrs["id"] for r in rows] == [f"delivery-{d.pk}" for d in expected], query


def test_send_test_from_the_page_shows_the_result_and_is_audited(client, operator):
    client = client.__class__(enforce_csrf_checks=True)
    client.force_login(operator)
    with receiver(200) as slack, eager_celery():
        channel = make_channel("ops", "slack", secret=slack.url + SLACK_PATH)
        page = client.get("/notifications/")
        form = dom(page).find("button", id=f"test-{channel.pk}").parent
        assert form.tag == "form" and form.attrs["action"] == reverse(
            "dashboard:notification-test", args=[channel.pk]
        )
        token = form.find("input", name="csrfmiddlewaretoken").attrs["value"]
        assert client.post(form.attrs["action"]).status_code == 403  # no CSRF token
        response = client.post(form.attrs["action"], {"csrfmiddlewaretoken": token}, follow=True)
    assert len(slack.requests) == 1
    sent = Delivery.objects.get()
    assert sent.status == "sent" and sent.notification.kind == notify.TEST
    page = dom(response)
    assert "Test sent to ops: HTTP 200." in page.text
    row = page.find("tr", id=f"delivery-{sent.pk}")
    assert "highlight" in row.attrs["class"] and "Test notification" in row.text
    assert AuditEntry.objects.get(action="notification.test").result == "ok"
    assert SLACK_PATH not in response.content.decode()


def test_a_viewer_sees_the_button_disabled_and_is_refused(as_viewer):
    channel = make_channel("ops", "email", recipients="ops@example.com")
    button = dom(as_viewer.get("/notifications/")).find("button", id=f"test-{channel.pk}")
    assert button.text == "Send test" and "disabled" in button.attrs
    assert as_viewer.post(reverse("dashboard:notification-test", args=[channel.pk])).status_code == 403
    assert AuditEntry.objects.get(action="notification.test").result == "refused"
    assert not Delivery.objects.exists()


def test_sending_a_test_needs_a_post(web):
    channel = make_channel("ops", "email", recipients="ops@example.com")
    assert web.get(reverse("dashboard:notification-test", args=[channel.pk])).status_code == 405


def test_the_secret_is_write_only_in_the_admin_and_never_in_a_page(staff_client, caplog):
    caplog.set_level(logging.DEBUG)
    channel = make_channel("issues", "github", repository="acme/ops", secret=GITHUB_TOKEN)
    change = reverse("admin:scheduler_channel_change", args=[channel.pk])
    assert GITHUB_TOKEN not in staff_client.get(change).content.decode()
    listing = staff_client.get(reverse("admin:scheduler_channel_changelist")).content.decode()
    assert GITHUB_TOKEN not in listing and ">set<" in listing
    # saving with the secret left blank keeps it
    data = {
        "name": "issues",
        "kind": "github",
        "enabled": "on",
        "events": ["stop.engaged", "provider.blocked"],
        "min_level": "info",
        "recipients": "",
        "url": "",
        "repository": "acme/ops",
        "api_url": "https://api.github.com",
        "secret": "",
        "_save": "Save",
    }
    response = staff_client.post(change, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    channel.refresh_from_db()
    assert channel.secret == GITHUB_TOKEN and channel.events == ["stop.engaged", "provider.blocked"]
    history = staff_client.get(reverse("admin:scheduler_channel_history", args=[channel.pk])).content.decode()
    assert "Secret" not in history and GITHUB_TOKEN not in history
    assert GITHUB_TOKEN not in staff_client.get("/notifications/").content.decode()
    for model in ("notification", "delivery"):
        assert staff_client.get(reverse(f"admin:scheduler_{model}_changelist")).status_code == 200
        assert staff_client.get(reverse(f"admin:scheduler_{model}_add")).status_code == 403
    assert GITHUB_TOKEN not in caplog.text


def test_the_admin_checks_each_kind_needs(staff_client):
    add = reverse("admin:scheduler_channel_add")
    base = {
        "kind": "webhook",
        "enabled": "on",
        "events": ["job.failed"],
        "min_level": "info",
        "_save": "Save",
    }
    response = staff_client.post(
        add, {**base, "name": "hook", "url": "http://127.0.0.1:9/in", "secret": "plain"}
    )
    assert "whsec_" in str(response.context["adminform"].form.errors["secret"])
    response = staff_client.post(
        add, {**base, "name": "mail", "kind": "email", "recipients": "not-an-address"}
    )
    assert "Not an email address" in str(response.context["adminform"].form.errors["recipients"])
    response = staff_client.post(
        add, {**base, "name": "gh", "kind": "github", "repository": "acme", "secret": "t"}
    )
    assert "owner/name" in str(response.context["adminform"].form.errors["repository"])
    assert not Channel.objects.exists()


def test_the_admin_action_sends_a_test_and_says_how_it_went(staff_client):
    with receiver(500) as slack:
        channel = make_channel("ops", "slack", secret=slack.url + SLACK_PATH)
        response = staff_client.post(
            reverse("admin:scheduler_channel_changelist"),
            {"action": "send_test", "_selected_action": [channel.pk]},
            follow=True,
        )
    (message,) = [str(m) for m in response.context["messages"]]
    assert message.startswith("ops: failed: POST http://127.0.0.1:") and "HTTP 500" in message
    assert SLACK_PATH not in message and SLACK_PATH not in response.content.decode()
    assert Delivery.objects.get().status == "failed"
