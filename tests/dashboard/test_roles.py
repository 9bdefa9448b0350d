"""Roles at the edges: every control endpoint × every role (pages, API, websocket), the audit
rows they leave, the viewer's disabled controls, API token roles, ``/api/v1/audit/``, the
``create_api_token`` and ``ensure_admin`` commands and the read-only audit admin."""

from __future__ import annotations

import hashlib
import json
import uuid
from io import StringIO

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.test import Client

from agentflow.asgi import application
from dashboard import consumers
from dashboard.models import ApiToken
from fleet.models import Gateway
from openclaw import SyncGatewayClient
from scheduler import audit, roles
from scheduler.models import AuditEntry
from scheduler.roles import Role
from tests.support.factories import bearer, make_gateway
from tests.support.gateway import wait_for
from tests.support.html import dom

pytestmark = [pytest.mark.usefixtures("redis_prefix"), pytest.mark.redis]

HTMX = {"HX-Request": "true"}
KEY = "agent:main:main"
REFUSAL = "needs the operator role; you are a viewer"


@pytest.fixture
def gateway(db):
    """Connected as far as the database knows, on a loopback port nothing listens on: an allowed
    control gets as far as the gateway and fails there (an "error" row), a refused one never does."""
    return make_gateway("alpha", status=Gateway.Status.CONNECTED)


@pytest.fixture
def cast(db, viewer, operator, django_user_model):
    admin = django_user_model.objects.create_user("alice", password="alice-pass")
    roles.assign(admin, Role.ADMIN)
    return {"anonymous": None, "viewer": viewer, "operator": operator, "admin": admin}


def client_as(user) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


# --- the control matrix: pages ----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("action", ["send", "abort"])
@pytest.mark.parametrize(
    ("who", "status", "result"),
    [
        ("anonymous", 302, None),
        ("viewer", 403, "refused"),
        ("operator", 302, "error"),
        ("admin", 302, "error"),
    ],
)
@pytest.mark.parametrize("htmx", [False, True], ids=["page", "htmx"])
def test_each_role_at_each_control_endpoint(cast, gateway, action, who, status, result, htmx):
    url = f"/gateways/{gateway.pk}/sessions/{KEY}/{action}"
    response = client_as(cast[who]).post(url, {"message": "hi"}, headers=HTMX if htmx else {})
    if who in ("operator", "admin") and htmx:
        status = 400  # htmx gets the composer / notice with the gateway's error, not a redirect
    assert response.status_code == status, response.content.decode()[-500:]
    if who == "anonymous":
        assert response["Location"].startswith("/accounts/login/")
    if who == "viewer":
        page = dom(response)
        assert REFUSAL in page.find("p", role="alert").text  # the 403 page, with the reason
    entries = list(AuditEntry.objects.all())
    if result is None:
        assert entries == []
        return
    [entry] = entries
    assert entry.action == f"chat.{action}"
    assert (entry.actor, entry.result, entry.source) == (cast[who], result, "web")
    assert (entry.target_type, entry.target_id) == ("session", f"{gateway.pk}:{KEY}")
    assert entry.target_label == f"alpha / {KEY}"
    assert entry.ip_address == "127.0.0.1"
    if result == "refused":
        assert REFUSAL in entry.message
    else:
        assert entry.message  # why the gateway call failed, as the operator was told


@pytest.mark.django_db
def test_a_role_taken_away_applies_to_the_next_request(operator, gateway):
    client = client_as(operator)
    url = f"/gateways/{gateway.pk}/sessions/{KEY}/abort"
    assert client.post(url).status_code == 302
    roles.assign(operator, Role.VIEWER)
    assert client.post(url).status_code == 403


@pytest.mark.django_db
def test_a_viewer_sees_the_controls_disabled_with_the_reason(viewer, operator, gateway):
    page = dom(client_as(viewer).get(f"/gateways/{gateway.pk}/sessions/{KEY}/"))
    composer = page.find("form", id="composer")
    assert composer.find("button", type="submit").attrs.get("disabled") is not None
    assert "viewer role" in composer.find("p", id="send-disabled").text
    abort = page.find("button", id="abort")
    assert abort.attrs.get("disabled") is not None
    assert "viewer role" in abort.attrs.get("title", "")
    # An operator's abort is only held back by there being no run in flight, not by the role.
    page = dom(client_as(operator).get(f"/gateways/{gateway.pk}/sessions/{KEY}/"))
    assert "viewer role" not in page.find("button", id="abort").attrs.get("title", "")
    assert not page.find("form", id="composer").has("p", id="send-disabled")


@pytest.mark.django_db
@pytest.mark.gateway
def test_an_operators_send_reaches_the_gateway_and_a_viewers_does_not(
    viewer, operator, gateway_row, live_openclaw
):
    Gateway.objects.filter(pk=gateway_row.pk).update(status=Gateway.Status.CONNECTED)
    key = f"agent:main:roles-{uuid.uuid4().hex[:8]}"
    url = f"/gateways/{gateway_row.pk}/sessions/{key}/send"
    refused_text, sent_text = (
        f"from a viewer {uuid.uuid4().hex[:6]}",
        f"from an operator {uuid.uuid4().hex[:6]}",
    )
    assert client_as(viewer).post(url, {"message": refused_text}).status_code == 403
    assert client_as(operator).post(url, {"message": sent_text}).status_code == 302
    gw = SyncGatewayClient(live_openclaw.url, live_openclaw.token, name="roles-tests")
    gw.connect()
    try:

        def texts() -> list[str]:
            return [str(m.get("content")) for m in gw.chat_history(key, limit=50).get("messages") or []]

        wait_for(lambda: any(sent_text in t for t in texts()), 30, what="the operator's message")
        assert not any(refused_text in t for t in texts())
    finally:
        gw.close()
    rows = list(AuditEntry.objects.order_by("id").values_list("actor_label", "result", "message"))
    assert rows == [
        ("viewer", "refused", roles.refusal(Role.VIEWER, "operate")),
        ("operator", "ok", f"{len(sent_text)} characters sent"),
    ]


# --- the API: token roles and the audit log -------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("who", "status"), [("anonymous", 401), ("viewer", 403), ("operator", 403), ("admin", 200)]
)
def test_the_audit_api_is_for_admins(cast, who, status):
    response = client_as(cast[who]).get("/api/v1/audit/")
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    if status == 403:
        assert "needs the admin role" in response.json()["error"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("user_role", "token_role", "status"),
    [
        ("viewer", "admin", 403),  # a token never outranks its user
        ("operator", "admin", 403),
        ("admin", "viewer", 403),  # nor its own role
        ("admin", "operator", 403),
        ("admin", "admin", 200),
    ],
)
def test_a_tokens_role_is_at_most_its_users(cast, user_role, token_role, status):
    response = Client().get("/api/v1/audit/", **bearer(cast[user_role], token_role))
    assert response.status_code == status, response.content
    # Reading stays open to every role's token.
    assert Client().get("/api/v1/gateways/", **bearer(cast[user_role], token_role)).status_code == 200


@pytest.mark.django_db
def test_the_audit_api_lists_newest_first_filters_and_paginates(cast, gateway):
    client_as(cast["viewer"]).post(f"/gateways/{gateway.pk}/sessions/{KEY}/abort")
    client_as(cast["operator"]).post(f"/gateways/{gateway.pk}/sessions/{KEY}/abort")
    audit.record("batch.run", audit.Actor.system(), audit.Target("batch", "BATCH-001", "Session polling"))
    api = client_as(cast["admin"])
    body = api.get("/api/v1/audit/?limit=2").json()
    assert [(r["actor"], r["action"], r["result"]) for r in body["results"]] == [
        ("system", "batch.run", "ok"),
        ("operator", "chat.abort", "error"),
    ]
    assert body["next"].endswith("offset=2&limit=2") or "offset=2" in body["next"]
    rest = api.get(body["next"]).json()
    [refused] = rest["results"]
    assert refused["actor"] == "viewer" and refused["user"] == "viewer" and refused["result"] == "refused"
    assert refused["target"] == {"type": "session", "id": f"{gateway.pk}:{KEY}", "label": f"alpha / {KEY}"}
    assert refused["source"] == "web" and refused["ip_address"] == "127.0.0.1" and refused["created_at"]
    assert [r["actor"] for r in api.get("/api/v1/audit/?result=refused").json()["results"]] == ["viewer"]
    assert [r["action"] for r in api.get("/api/v1/audit/?action=batch.run").json()["results"]] == [
        "batch.run"
    ]
    bad = api.get("/api/v1/audit/?result=maybe")
    assert bad.status_code == 400 and "'result' must be one of ok, refused, error" in bad.json()["error"]
    assert api.get("/api/v1/audit/?limit=x").status_code == 400


# --- the websocket ------------------------------------------------------------------------------------


def ws_headers(user) -> list[tuple[bytes, bytes]]:
    client = Client()
    client.force_login(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    return [(b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1"), (b"cookie", cookie.encode())]


@pytest.mark.django_db(transaction=True)
async def test_panel_open_is_read_access_and_a_websocket_control_checks_the_role(
    monkeypatch, viewer, operator
):
    from asgiref.sync import sync_to_async

    gateway = await sync_to_async(make_gateway)("ws-roles")
    handled: list[str] = []

    async def pretend_control(self, message):
        handled.append(self.scope["user"].username)

    # No control travels over the socket yet; this one stands for the first that will.
    monkeypatch.setattr(consumers.DashboardConsumer, "_pretend_control", pretend_control, raising=False)
    monkeypatch.setitem(consumers.MESSAGES, "queue.pause", ("operate", "_pretend_control"))
    for user in (viewer, operator):
        headers = await sync_to_async(ws_headers)(user)
        communicator = WebsocketCommunicator(application, "/ws/dashboard/", headers=headers)
        connected, _ = await communicator.connect(timeout=5)
        assert connected
        await communicator.send_to(text_data=json.dumps({"type": "queue.pause"}))
        if user is viewer:
            answer = json.loads(await communicator.receive_from(3))
            assert answer["type"] == "refused" and REFUSAL in answer["error"]
        else:
            assert await communicator.receive_nothing(0.5)
        # Read access for everyone: a viewer's panel opens.
        await communicator.send_to(
            text_data=json.dumps({"type": "panel.open", "gateway_id": gateway.pk, "session_key": KEY})
        )
        await communicator.disconnect()
    assert handled == ["operator"]
    rows = await sync_to_async(list)(
        AuditEntry.objects.values_list("action", "actor_label", "result", "source")
    )
    assert rows == [("queue.pause", "viewer", "refused", "websocket")]


# --- commands ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_create_api_token_prints_a_working_token_once_and_stores_its_hash(cast):
    out, err = StringIO(), StringIO()
    call_command("create_api_token", "ops script", user="alice", role="admin", stdout=out, stderr=err)
    raw = out.getvalue().strip()
    assert raw.startswith("af_") and "\n" not in raw  # stdout is the token alone, for scripts
    token = ApiToken.objects.get()
    assert (token.name, token.user, token.role) == ("ops script", cast["admin"], "admin")
    assert token.token_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in {token.name, token.prefix, token.token_hash}
    assert "shown once" in err.getvalue()
    response = Client().get("/api/v1/audit/", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 200
    [issued] = response.json()["results"]
    assert (issued["action"], issued["actor"]) == ("api_token.issue", "command create_api_token")
    assert raw not in response.content.decode()  # nor in the audit


@pytest.mark.django_db
def test_create_api_token_defaults_to_viewer_and_warns_when_the_user_is_lower(cast):
    call_command("create_api_token", "reader", user="viewer", stdout=StringIO(), stderr=StringIO())
    assert ApiToken.objects.get().role == "viewer"
    err = StringIO()
    call_command(
        "create_api_token", "too high", user="viewer", role="operator", stdout=StringIO(), stderr=err
    )
    assert "acts as a viewer" in err.getvalue()


@pytest.mark.django_db
def test_create_api_token_refuses_bad_input_clearly(cast):
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        call_command("create_api_token", "x", user="nobody")
    with pytest.raises(CommandError, match="unknown role 'root': use viewer, operator, admin"):
        call_command("create_api_token", "x", user="alice", role="root")
    assert not ApiToken.objects.exists()


@pytest.mark.django_db
def test_ensure_admin_makes_a_superuser_in_the_admin_group(monkeypatch):
    monkeypatch.setenv("AGENTFLOW_ADMIN_USER", "root")
    monkeypatch.setenv("AGENTFLOW_ADMIN_PASSWORD", "a-long-password-1")
    call_command("ensure_admin", stdout=StringIO())
    user = User.objects.get(username="root")
    assert user.is_superuser and list(user.groups.values_list("name", flat=True)) == ["admin"]
    assert roles.role_of(user) is Role.ADMIN


# --- the admin --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_audit_admin_is_read_only(admin_user, operator, gateway):
    client_as(operator).post(f"/gateways/{gateway.pk}/sessions/{KEY}/abort")
    entry = AuditEntry.objects.get()
    admin = client_as(admin_user)
    listing = admin.get("/admin/scheduler/auditentry/?result__exact=error")
    assert listing.status_code == 200 and "chat.abort" in listing.content.decode()
    assert admin.get("/admin/scheduler/auditentry/add/").status_code == 403
    assert admin.post(f"/admin/scheduler/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    admin.post(f"/admin/scheduler/auditentry/{entry.pk}/change/", {"result": "ok", "message": "edited"})
    entry.refresh_from_db()
    assert (entry.result, entry.message) != ("ok", "edited")


@pytest.mark.django_db
def test_resolving_alerts_in_the_admin_is_audited_and_needs_an_operator(admin_user, django_user_model):
    from scheduler.models import Alert

    open_alert = Alert.objects.create(source="BATCH-004", message="cleanup failed")
    data = {"action": "resolve", "_selected_action": [str(open_alert.pk)]}
    # Staff with the admin's alert permissions but the viewer role: refused, and the alert stays open.
    staff = django_user_model.objects.create_user("staff", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=["view_alert", "change_alert"]))
    client_as(staff).post("/admin/scheduler/alert/", data)
    open_alert.refresh_from_db()
    assert open_alert.resolved_at is None
    client_as(admin_user).post("/admin/scheduler/alert/", data)
    open_alert.refresh_from_db()
    assert open_alert.resolved_at is not None
    rows = list(
        AuditEntry.objects.order_by("id").values_list("actor_label", "action", "result", "source", "message")
    )
    assert rows[0][:4] == ("staff", "alert.resolve", "refused", "admin")
    assert rows[1] == ("boss", "alert.resolve", "ok", "admin", "1 resolved")
