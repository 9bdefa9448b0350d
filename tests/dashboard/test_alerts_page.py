"""The Alerts page, the open alerts' banners on every page and GET /api/v1/alerts/ (bearer token
or session), against alerts the rules really raised where it matters."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from scheduler import alert_rules
from scheduler.models import Alert, ProviderBlock
from tests.support.factories import make_api_token
from tests.support.html import dom

pytestmark = [pytest.mark.django_db, pytest.mark.redis, pytest.mark.usefixtures("redis_prefix")]


def alert(level="warning", rule="gateway-down", subject="a", minutes=10, resolved=None, **fields) -> Alert:
    now = timezone.now()
    return Alert.objects.create(
        level=level, rule=rule, subject=subject, source=f"{rule}:{subject}",
        message=fields.pop("message", f"{rule} {subject}"), created_at=now - timedelta(minutes=minutes),
        last_seen=now - timedelta(seconds=20), count=fields.pop("count", 40), resolved_at=resolved, **fields,
    )  # fmt: skip


def rows_of(page, table_id: str) -> list:
    return [r for r in page.find("table", id=table_id).find_all("tr") if r.attrs.get("id")]


@pytest.fixture
def web(client, operator):
    client.force_login(operator)
    return client


# --- the page ----------------------------------------------------------------------------------------


def test_the_alerts_page_lists_open_alerts_severest_first_then_the_history_and_the_rules(web):
    alert_rules.ensure_rules()
    warning = alert("warning", subject="w")
    critical = alert("critical", rule="provider-blocked", subject="1:main:anthropic")
    old = alert("error", subject="gone", resolved=timezone.now() - timedelta(minutes=1))
    page = dom(web.get("/alerts/"))
    rows = rows_of(page, "alerts-open")
    assert [r.attrs["id"] for r in rows] == [f"alert-{critical.pk}", f"alert-{warning.pk}"]
    first = rows[0]
    assert first.find("span", cls="status").text.strip() == "Critical"
    assert "1:main:anthropic" in first.text and "10 min ago" in first.text and "40" in first.text
    history = rows_of(page, "alerts-history")
    assert [r.attrs["id"] for r in history] == [f"alert-{old.pk}"]
    rules = page.find("table", id="alert-rules")
    assert "Error rate of finished runs > 1 % over 5 min" in rules.find("tr", id="rule-error-rate").text
    nav = page.find("a", cls="nav-item", aria_current="page")
    assert nav.attrs["href"] == "/alerts/" and nav.text.strip() == "Alerts"


def test_the_alerts_page_filters_by_level_and_rule_without_javascript(web):
    alert("warning", rule="queue-length", subject="normal")
    error = alert("error", rule="gateway-down", subject="b")
    Alert.objects.create(source="BATCH-004", message="History cleanup failed", level="error")
    page = dom(web.get("/alerts/?level=error&rule=gateway-down"))
    rows = rows_of(page, "alerts-open")
    assert [r.attrs["id"] for r in rows] == [f"alert-{error.pk}"]
    chosen = [o for o in page.find("select", id="alerts-level").find_all("option") if "selected" in o.attrs]
    assert [o.attrs["value"] for o in chosen] == ["error"]
    no_rule = dom(web.get("/alerts/?rule=-")).find("table", id="alerts-open")
    assert "History cleanup failed" in no_rule.text and "gateway-down b" not in no_rule.text
    empty = dom(web.get("/alerts/?level=info"))
    assert "No open alert matches the filters." in empty.find("table", id="alerts-open").text


def test_the_alerts_page_needs_a_login(client):
    response = client.get("/alerts/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# --- the banners (every page but the Alerts page) ---------------------------------------------------


def test_the_overview_shows_the_severest_open_alerts_with_first_and_last_seen(web):
    alert("info", subject="i")
    alert("warning", subject="w")
    alert("error", subject="e", message="gateway e is disconnected")
    critical = alert("critical", rule="provider-blocked", subject="p", message="provider blocked")
    alert("error", subject="old", resolved=timezone.now())
    slot = dom(web.get("/")).find("div", id="banners")
    banners = slot.find_all("p", cls="alert")
    assert len(banners) == 4  # three alerts and "1 more"
    top = banners[0]
    assert top.attrs["id"] == f"alert-banner-{critical.pk}" and top.attrs["role"] == "alert"
    assert "alert-error" in top.attrs["class"] and top.find("strong").text == "Critical:"
    assert "provider blocked" in top.text
    assert "first seen 10 min ago · last seen just now · 40 times" in top.find("span", cls="muted").text
    assert top.find("a").attrs["href"] == f"/alerts/#alert-{critical.pk}"
    assert "gateway e is disconnected" in banners[1].text
    assert banners[3].attrs["id"] == "alerts-more" and "1 more open alert." in banners[3].text
    # Every other page shows them too; the Alerts page lists them instead.
    queue = dom(web.get("/queue/")).find("div", id="banners").find_all("p", cls="alert")
    assert [b.attrs["id"] for b in queue] == [b.attrs["id"] for b in banners]
    assert not dom(web.get("/alerts/")).find("div", id="banners").has("p", cls="alert")


def test_the_banners_read_a_redis_snapshot_that_a_saved_alert_drops(web, django_assert_num_queries):
    from dashboard.context_processors import BANNERS_SHOWN, COUNT_CAP
    from scheduler import alerts

    first = alert("error", subject="e", message="gateway e is disconnected")
    alerts.open_snapshot(BANNERS_SHOWN, COUNT_CAP)  # the first page load after a change queries once
    with django_assert_num_queries(0):
        shown, count = alerts.open_snapshot(BANNERS_SHOWN, COUNT_CAP)
    assert [(a.pk, a.message, a.level, a.count) for a in shown] == [(first.pk, first.message, "error", 40)]
    assert count == 1 and shown[0].created_at == first.created_at and shown[0].banner_level == "error"
    alert("critical", subject="c", message="provider blocked")  # saved: the snapshot is dropped
    shown, count = alerts.open_snapshot(BANNERS_SHOWN, COUNT_CAP)
    assert count == 2 and shown[0].message == "provider blocked"
    first.resolved_at = timezone.now()
    first.save()
    slot = dom(web.get("/jobs/")).find("div", id="banners")
    assert [b.find("strong").text for b in slot.find_all("p", cls="alert")] == ["Critical:"]


def test_no_banner_without_open_alerts(web):
    alert("error", subject="old", resolved=timezone.now())
    assert not dom(web.get("/")).find("div", id="banners").has("p", cls="alert")


def test_a_raised_alert_appears_on_the_next_page_load_and_goes_when_resolved(web):
    ProviderBlock.objects.create(gateway="1", agent="main", provider="anthropic", reason="401 expired")
    alert_rules.evaluate()
    banner = dom(web.get("/")).find("div", id="banners").find("p", cls="alert")
    assert "provider anthropic of agent main (gateway 1) is blocked: 401 expired" in banner.text
    ProviderBlock.objects.update(ended_at=timezone.now())
    alert_rules.evaluate()
    assert not dom(web.get("/")).find("div", id="banners").has("p", cls="alert")


# --- the API -----------------------------------------------------------------------------------------


@pytest.fixture
def token(viewer):
    _, raw = make_api_token(viewer, "alerts", role="viewer")
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def test_the_api_lists_open_alerts_first_then_the_history_with_first_and_last_seen(client, token):
    warning = alert("warning", subject="w")
    critical = alert("critical", rule="provider-blocked", subject="p")
    old = alert("error", subject="gone", resolved=timezone.now())
    response = client.get("/api/v1/alerts/", **token)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["id"] for r in results] == [critical.pk, warning.pk, old.pk]
    top = results[0]
    assert top["level"] == "critical" and top["rule"] == "provider-blocked" and top["subject"] == "p"
    assert top["open"] is True and top["resolved_at"] is None and top["count"] == 40
    assert top["first_seen"] == critical.created_at.isoformat()
    assert top["last_seen"] == critical.last_seen.isoformat()
    assert results[2]["open"] is False and results[2]["resolved_at"]


def test_the_api_filters_open_and_level_and_refuses_bad_values(client, token):
    warning = alert("warning", subject="w")
    alert("error", subject="e")
    resolved = alert("warning", subject="gone", resolved=timezone.now())
    ids = lambda query: [r["id"] for r in client.get(f"/api/v1/alerts/{query}", **token).json()["results"]]  # noqa: E731
    assert ids("?open=1&level=warning") == [warning.pk]
    assert ids("?open=0") == [resolved.pk]
    assert ids("?rule=queue-length") == []
    for query in ("?open=yes", "?level=loud"):
        response = client.get(f"/api/v1/alerts/{query}", **token)
        assert response.status_code == 400 and response.json()["code"] == "bad_param"


def test_the_api_needs_a_token_or_a_session(client, operator):
    alert("warning", subject="w")
    assert client.get("/api/v1/alerts/").status_code == 401
    client.force_login(operator)
    response = client.get("/api/v1/alerts/?open=1")
    assert response.status_code == 200 and len(response.json()["results"]) == 1


def test_the_schema_describes_the_alerts_endpoint(client, token):
    schema = client.get("/api/v1/schema/", **token).json()
    op = schema["paths"]["/api/v1/alerts/"]["get"]
    assert {p["name"] for p in op["parameters"]} >= {"open", "level", "rule", "limit", "offset"}
    item = op["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["results"]["items"]
    assert {"level", "first_seen", "last_seen", "count", "open", "resolved_at"} <= set(item["properties"])


# --- the admin ---------------------------------------------------------------------------------------


def test_a_rule_is_edited_in_the_admin_and_cannot_be_added_or_deleted(client, admin_user):
    from scheduler.models import AlertRule

    alert_rules.ensure_rules()
    client.force_login(admin_user)
    rule = AlertRule.objects.get(key="queue-length")
    url = f"/admin/scheduler/alertrule/{rule.pk}/change/"
    page = client.get(url)
    assert page.status_code == 200 and "Queued runs of one priority &gt; 1,000 runs" in page.content.decode()
    form = {"enabled": "on", "level": "error", "threshold": "250", "window_seconds": "0", "min_samples": "0",
            "cooldown_seconds": "60"}  # fmt: skip
    assert client.post(url, form).status_code == 302
    rule.refresh_from_db()
    assert (rule.threshold, rule.level, rule.cooldown_seconds) == (250, "error", 60)
    assert client.get("/admin/scheduler/alertrule/add/").status_code == 403
    assert client.get(f"/admin/scheduler/alertrule/{rule.pk}/delete/").status_code == 403
    listing = client.get("/admin/scheduler/alertrule/")
    assert listing.status_code == 200 and "error-rate" in listing.content.decode()
    history = client.get("/admin/scheduler/alert/?rule=queue-length")
    assert history.status_code == 200
