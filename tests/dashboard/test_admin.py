"""Login and the admin: the dashboard is private, the gateway token is write-only, the list pages
for the synced data render with their search and filters."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.urls import reverse

from fleet.models import AgentSession, Gateway
from tests.support.factories import make_agent, make_chat, make_config, make_gateway, make_session
from tests.support.html import dom

STORED_TOKEN = "stored-admin-token-0b9e61"  # markers to look for in responses
NEW_TOKEN = "replacement-admin-token-5aa2d0"


@pytest.fixture
def staff_client(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.fixture
def gateway(db) -> Gateway:
    return make_gateway(
        "prod-eu", url="ws://127.0.0.1:18789/", token=STORED_TOKEN, status=Gateway.Status.CONNECTED
    )


def change_form(gateway: Gateway, **overrides) -> dict[str, str]:
    data = {"name": gateway.name, "url": gateway.url, "token": "", "enabled": "on", "_save": "Save"}
    data.update(overrides)
    return data


# --- login --------------------------------------------------------------------------------------


def test_the_overview_redirects_anonymous_visitors_to_the_login_page(client, db):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next=/"


def test_the_login_page_itself_is_public(client, db):
    assert client.get(reverse("login")).status_code == 200


def test_healthz_does_not_require_a_login(client, db, redis_client):
    assert client.get("/healthz").status_code == 200


def test_a_logged_in_operator_sees_the_overview_without_the_token(client, operator, gateway):
    client.force_login(operator)
    response = client.get("/")
    assert response.status_code == 200
    content = response.content.decode()
    assert "prod-eu" in content
    assert STORED_TOKEN not in content


def test_an_operator_without_staff_rights_cannot_open_the_admin(client, operator, gateway):
    client.force_login(operator)
    response = client.get(reverse("admin:fleet_gateway_change", args=[gateway.pk]))
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


# --- gateway token ------------------------------------------------------------------------------


def test_the_gateway_change_page_never_renders_the_token(staff_client, gateway):
    response = staff_client.get(reverse("admin:fleet_gateway_change", args=[gateway.pk]))
    assert response.status_code == 200
    content = response.content.decode()
    assert dom(response).find("input", name="token").attrs["type"] == "password"
    assert "Leave blank to keep the current token." in content
    assert STORED_TOKEN not in content


def test_the_gateway_list_shows_whether_a_token_is_set_but_not_the_token(staff_client, gateway):
    make_gateway("no-token", token="")
    response = staff_client.get(reverse("admin:fleet_gateway_changelist"))
    assert response.status_code == 200
    content = response.content.decode()
    cells = {td.text.strip() for td in dom(response).find_all("td", cls="field-has_token")}
    assert cells == {"set", "not set"}
    assert STORED_TOKEN not in content


def test_a_blank_token_keeps_the_stored_one(staff_client, gateway):
    url = reverse("admin:fleet_gateway_change", args=[gateway.pk])
    response = staff_client.post(url, change_form(gateway, url="ws://127.0.0.1:18790/"))
    assert response.status_code == 302, response.context["adminform"].form.errors
    gateway.refresh_from_db()
    assert gateway.token == STORED_TOKEN
    assert gateway.url == "ws://127.0.0.1:18790/"


def test_a_new_token_replaces_the_stored_one(staff_client, gateway):
    url = reverse("admin:fleet_gateway_change", args=[gateway.pk])
    response = staff_client.post(url, change_form(gateway, token=NEW_TOKEN))
    assert response.status_code == 302
    gateway.refresh_from_db()
    assert gateway.token == NEW_TOKEN
    page = staff_client.get(url).content.decode()
    assert NEW_TOKEN not in page and STORED_TOKEN not in page


def test_saving_the_form_does_not_reset_the_recorded_status(staff_client, gateway):
    url = reverse("admin:fleet_gateway_change", args=[gateway.pk])
    staff_client.post(url, change_form(gateway, token=NEW_TOKEN))
    gateway.refresh_from_db()
    assert gateway.status == Gateway.Status.CONNECTED


@pytest.mark.parametrize(
    "bad_url", ["http://127.0.0.1:18789/", "127.0.0.1:18789", "https://gw.example.test/"]
)
def test_a_url_that_is_not_a_websocket_url_is_rejected_with_a_clear_error(staff_client, gateway, bad_url):
    url = reverse("admin:fleet_gateway_change", args=[gateway.pk])
    response = staff_client.post(url, change_form(gateway, url=bad_url, token=NEW_TOKEN))
    assert response.status_code == 200  # the form comes back with the error
    assert response.context["adminform"].form.errors["url"] == [
        "The gateway URL must start with ws:// or wss://"
    ]
    content = response.content.decode()
    assert "The gateway URL must start with ws:// or wss://" in content
    assert NEW_TOKEN not in content  # the typed token is not echoed back either
    assert STORED_TOKEN not in content
    gateway.refresh_from_db()
    assert gateway.url == "ws://127.0.0.1:18789/"
    assert gateway.token == STORED_TOKEN


def test_a_wss_url_with_surrounding_spaces_is_accepted_and_trimmed(staff_client, gateway):
    url = reverse("admin:fleet_gateway_change", args=[gateway.pk])
    response = staff_client.post(url, change_form(gateway, url="  wss://gw.example.test/  "))
    assert response.status_code == 302
    gateway.refresh_from_db()
    assert gateway.url == "wss://gw.example.test/"


def test_adding_a_gateway_stores_its_token(staff_client, db):
    response = staff_client.post(
        reverse("admin:fleet_gateway_add"),
        {
            "name": "new-gw",
            "url": "ws://127.0.0.1:18789/",
            "token": NEW_TOKEN,
            "enabled": "on",
            "_save": "Save",
        },
    )
    assert response.status_code == 302
    gateway = Gateway.objects.get(name="new-gw")
    assert gateway.token == NEW_TOKEN
    assert gateway.status == Gateway.Status.UNKNOWN


def test_the_gateway_list_searches_and_filters(staff_client, gateway):
    make_gateway("staging", url="ws://10.0.0.9:18789/", enabled=False)
    changelist = reverse("admin:fleet_gateway_changelist")
    response = staff_client.get(changelist, {"q": "prod"})
    assert response.status_code == 200
    assert [g.name for g in response.context["cl"].result_list] == ["prod-eu"]
    response = staff_client.get(changelist, {"enabled__exact": "0"})
    assert [g.name for g in response.context["cl"].result_list] == ["staging"]
    response = staff_client.get(changelist, {"status__exact": "connected"})
    assert [g.name for g in response.context["cl"].result_list] == ["prod-eu"]


# --- synced data list pages ----------------------------------------------------------------------


@pytest.fixture
def synced(gateway):
    other = make_gateway("prod-us", token=STORED_TOKEN)
    main = make_agent(gateway, "main", name="Main Agent", emoji="🦀", is_default=True)
    writer = make_agent(gateway, "writer", name="Writer", parent=main)
    make_agent(other, "researcher", name="Researcher")
    when = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    make_session(
        gateway,
        "agent:main:alpha",
        main,
        kind="direct",
        status=AgentSession.Status.ACTIVE,
        has_active_run=True,
        total_tokens=120,
        gw_updated_at=when,
    )
    make_session(gateway, "agent:writer:beta", writer, status=AgentSession.Status.IDLE, gw_updated_at=when)
    make_config(
        gateway, "sha256:" + "a" * 64, config={"agents": {}}, changed_paths=["agents"], created_at=when
    )
    make_config(other, "sha256:" + "b" * 64, created_at=when)
    make_chat(gateway, "agent:main:alpha", "hello there", message_id="m1", timestamp=when, run_id="run-1")
    make_chat(
        gateway,
        "agent:main:alpha",
        "You said: hello there",
        message_id="m2",
        role="assistant",
        timestamp=when,
        run_id="run-1",
    )
    return {"gateway": gateway, "other": other}


def results(response) -> list:
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


def test_the_agent_list_renders_searches_and_filters(staff_client, synced):
    changelist = reverse("admin:fleet_agent_changelist")
    assert len(results(staff_client.get(changelist))) == 3
    assert [a.agent_id for a in results(staff_client.get(changelist, {"q": "writ"}))] == ["writer"]
    filtered = results(staff_client.get(changelist, {"gateway__id__exact": synced["other"].pk}))
    assert [a.agent_id for a in filtered] == ["researcher"]
    assert [a.agent_id for a in results(staff_client.get(changelist, {"is_default__exact": "1"}))] == ["main"]


def test_the_session_list_renders_searches_and_filters(staff_client, synced):
    changelist = reverse("admin:fleet_agentsession_changelist")
    assert len(results(staff_client.get(changelist))) == 2
    found = results(staff_client.get(changelist, {"q": "beta"}))
    assert [s.session_key for s in found] == ["agent:writer:beta"]
    active = results(staff_client.get(changelist, {"status__exact": "active", "has_active_run__exact": "1"}))
    assert [s.session_key for s in active] == ["agent:main:alpha"]
    assert len(results(staff_client.get(changelist, {"kind": "direct"}))) == 1
    by_date = results(
        staff_client.get(changelist, {"gw_updated_at__year": "2026", "gw_updated_at__month": "3"})
    )
    assert len(by_date) == 2


def test_the_config_history_list_renders_searches_and_filters(staff_client, synced):
    changelist = reverse("admin:fleet_confighistory_changelist")
    response = staff_client.get(changelist)
    assert len(results(response)) == 2
    assert "a" * 16 in response.content.decode()  # the short hash column
    assert len(results(staff_client.get(changelist, {"q": "b" * 20}))) == 1
    filtered = results(staff_client.get(changelist, {"gateway__id__exact": synced["gateway"].pk}))
    assert [c.changed_paths for c in filtered] == [["agents"]]
    assert len(results(staff_client.get(changelist, {"created_at__year": "2026"}))) == 2


def test_the_chat_history_list_renders_searches_and_filters(staff_client, synced):
    changelist = reverse("admin:fleet_chathistory_changelist")
    assert len(results(staff_client.get(changelist))) == 2
    assert [m.message_id for m in results(staff_client.get(changelist, {"q": "You said"}))] == ["m2"]
    assert [m.message_id for m in results(staff_client.get(changelist, {"role__exact": "user"}))] == ["m1"]
    filtered = results(staff_client.get(changelist, {"gateway__id__exact": synced["other"].pk}))
    assert filtered == []
    assert (
        len(results(staff_client.get(changelist, {"timestamp__year": "2026", "timestamp__month": "3"}))) == 2
    )


@pytest.mark.parametrize("model", ["agent", "agentsession", "confighistory", "chathistory"])
def test_the_change_pages_of_synced_rows_render(staff_client, synced, model):
    from django.apps import apps

    row = apps.get_model("fleet", model).objects.first()
    response = staff_client.get(reverse(f"admin:fleet_{model}_change", args=[row.pk]))
    assert response.status_code == 200
    assert STORED_TOKEN not in response.content.decode()


def test_keeping_the_token_is_not_logged_as_a_token_change(staff_client, gateway):
    from django.contrib.admin.models import LogEntry

    url = reverse("admin:fleet_gateway_change", args=[gateway.pk])
    staff_client.post(url, change_form(gateway, url="ws://127.0.0.1:18790/"))
    [entry] = LogEntry.objects.all()
    assert "token" not in entry.get_change_message().lower()


# --- history is read-only, numbers are readable ----------------------------------------------------


def test_run_history_and_health_checks_are_read_only_in_the_admin(staff_client, gateway):
    from fleet.models import HealthSample
    from tests.support.factories import make_batch_run

    run = make_batch_run("BATCH-003", gateway, counts={"panels": 0}, duration_ms=2270.466999959808)
    sample = HealthSample.objects.create(gateway=gateway, connected=True, latency_ms=2.270466999959808)
    for name, obj in (("scheduler_batchrun", run), ("fleet_healthsample", sample)):
        changelist = staff_client.get(reverse(f"admin:{name}_changelist"))
        assert changelist.status_code == 200
        html = changelist.content.decode()
        assert reverse(f"admin:{name}_add") not in html  # no "Add …" button
        assert "2.270466999959808" not in html and "2270.466999959808" not in html
        assert staff_client.get(reverse(f"admin:{name}_add")).status_code == 403
        assert (
            staff_client.post(reverse(f"admin:{name}_delete", args=[obj.pk]), {"post": "yes"}).status_code
            == 403
        )
        assert staff_client.get(reverse(f"admin:{name}_change", args=[obj.pk])).status_code == 200  # viewable
    assert "2.27 s" in staff_client.get(reverse("admin:scheduler_batchrun_changelist")).content.decode()
    assert "0 panels" in staff_client.get(reverse("admin:scheduler_batchrun_changelist")).content.decode()
    assert "2 ms" in staff_client.get(reverse("admin:fleet_healthsample_changelist")).content.decode()


def test_the_gateway_list_shows_latency_rounded(staff_client, gateway):
    Gateway.objects.filter(pk=gateway.pk).update(latency_ms=1234.5678)
    html = staff_client.get(reverse("admin:fleet_gateway_changelist")).content.decode()
    assert "1.23 s" in html and "1234.5678" not in html


def test_alerts_are_resolved_not_written_by_hand(staff_client, db):
    from tests.support.factories import make_alert

    alert = make_alert("cleanup failed")
    html = staff_client.get(reverse("admin:scheduler_alert_changelist")).content.decode()
    assert "cleanup failed" in html and reverse("admin:scheduler_alert_add") not in html
    response = staff_client.post(
        reverse("admin:scheduler_alert_changelist"),
        {"action": "resolve", "_selected_action": [alert.pk]},
    )
    assert response.status_code == 302
    alert.refresh_from_db()
    assert alert.resolved_at is not None


def test_blocked_provider_episodes_are_read_only_and_unblock_through_the_audited_control(
    staff_client, redis_prefix
):
    from scheduler.models import AuditEntry, ProviderBlock, Run

    block = ProviderBlock.objects.create(gateway="3", agent="main", provider="anthropic", reason="401")
    run = Run.objects.create(
        kind="agent.prompt", status="blocked", gateway="3", agent="main", provider="anthropic"
    )
    url = reverse("admin:scheduler_providerblock_changelist")
    page = staff_client.get(url)
    assert page.status_code == 200 and "anthropic" in page.content.decode()
    assert staff_client.get(reverse("admin:scheduler_providerblock_add")).status_code == 403
    response = staff_client.post(url, {"action": "unblock", "_selected_action": [block.pk]}, follow=True)
    assert response.status_code == 200
    run.refresh_from_db()
    block.refresh_from_db()
    assert run.status == "queued" and block.ended_at is not None
    assert AuditEntry.objects.filter(action="provider.unblock", result="ok", source="admin").exists()
