"""Bad input gets a 400 or a 404 naming what was wrong, never a 500; every error under /api/ is
JSON, also with DEBUG on; server-built HTML (the abort reply) escapes gateway text."""

from __future__ import annotations

import json
import logging

import pytest
from django.test import Client

from dashboard import api
from fleet.models import ConfigHistory
from tests.support.factories import make_api_token, make_chat, make_config, make_gateway
from tests.support.html import dom
from tests.support.ports import closed_port

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_prefix"), pytest.mark.redis]

HTMX = {"HX-Request": "true"}
TOO_BIG = str(2**63)  # one past the largest id a database holds
SUPERSCRIPT_TWO = "²"  # "²".isdigit() is True, int("²") raises


@pytest.fixture
def web(client, operator):
    client.force_login(operator)
    return client


@pytest.fixture
def gw(db):
    gateway = make_gateway("alpha")
    make_chat(gateway, "agent:main:main", "hello", message_id="m1")
    make_config(gateway, "h1")
    make_config(gateway, "h2")
    return gateway


# --- pages ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/gateways/{g}/sessions/agent:main:main/?before=²", "'before' must be an integer, got '²'"),
        ("/gateways/{g}/sessions/agent:main:main/?before=٣", "'before' must be an integer"),
        ("/gateways/{g}/sessions/agent:main:main/?before=" + TOO_BIG, "'before' must be at most"),
        ("/gateways/{g}/sessions/agent:main:main/?before=0", "'before' must be at least 1"),
        ("/gateways/{g}/config/?a=²&b=1", "'a' must be an integer, got '²'"),
        ("/gateways/{g}/config/?a=1&b=" + TOO_BIG, "'b' must be at most"),
        ("/gateways/{g}/config/?a=1&b=" + "9" * 400, "'b' must be an integer"),
    ],
)
def test_a_bad_number_in_a_page_query_is_a_400_page_naming_the_parameter(web, gw, url, message):
    response = web.get(url.format(g=gw.pk))
    assert response.status_code == 400
    assert message in dom(response).find("p", role="alert").text


@pytest.mark.parametrize(
    "url",
    [
        "/gateways/{big}/config/",
        "/fragments/gateways/{big}/",
        "/fragments/gateways/{big}/health/",
        "/fragments/gateways/{g}/agents/{big}/sessions/",
        "/gateways/{g}/messages/{big}/",
        "/gateways/{big}/sessions/agent:main:main/",
        "/gateways/" + "9" * 30 + "/config/",
    ],
)
def test_a_path_id_past_the_database_range_is_a_404(web, gw, url):
    assert web.get(url.format(g=gw.pk, big=TOO_BIG)).status_code == 404


def test_the_largest_id_is_still_an_id_and_simply_not_found(web, gw):
    assert web.get(f"/gateways/{2**63 - 1}/config/").status_code == 404


def test_good_ids_still_work(web, gw):
    second = make_chat(gw, "agent:main:main", "second", message_id="m2")
    response = web.get(f"/gateways/{gw.pk}/sessions/agent:main:main/?before={second.pk}")
    assert response.status_code == 200
    assert "hello" in response.content.decode() and "second" not in response.content.decode()
    old, new = ConfigHistory.objects.filter(gateway=gw).order_by("pk")
    response = web.get(f"/gateways/{gw.pk}/config/?a={old.pk}&b={new.pk}")
    assert response.status_code == 200


def test_a_nul_character_in_the_query_is_a_400(web, gw):
    assert web.get(f"/gateways/{gw.pk}/sessions/agent:main:main/?q=a%00b").status_code == 400
    assert web.get("/?q=%00").status_code == 400
    assert web.get("/api/v1/sessions/?agent=%00").json() == {
        "error": "NUL characters are not allowed in the URL",
        "code": "bad_request",
    }


# --- the abort reply ----------------------------------------------------------------------------------


def test_the_abort_reply_escapes_the_gateway_error(web):
    """The gateway's error text reaches the reply (here a real refused connection, whose message
    names the URL); it must arrive as text, not markup."""
    gateway = make_gateway("markup", url=f"ws://127.0.0.1:{closed_port()}/<script>alert(1)</script>")
    response = web.post(f"/gateways/{gateway.pk}/sessions/agent:main:main/abort", headers=HTMX)
    assert response.status_code == 400
    body = response.content.decode()
    assert "<script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    notice = dom(response).find("span", role="status").text
    assert "Cannot reach the gateway" in notice and "<script>alert(1)</script>" in notice


# --- the API: bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "status", "message"),
    [
        ("/api/v1/agents/?gateway=²", 404, "no gateway named '²'"),
        ("/api/v1/sessions/?gateway=" + TOO_BIG, 404, f"no gateway named '{TOO_BIG}'"),
        ("/api/v1/gateways/?offset=" + TOO_BIG, 400, "'offset' must be at most 100000"),
        ("/api/v1/gateways/?offset=100001", 400, "'offset' must be at most 100000"),
        ("/api/v1/gateways/?offset=²", 400, "'offset' must be an integer, got '²'"),
        ("/api/v1/gateways/?limit=²", 400, "'limit' must be an integer, got '²'"),
        ("/api/v1/gateways/?limit=" + "9" * 5000, 400, "'limit' must be an integer"),
        ("/api/v1/chat/agent:main:main/?after=²", 400, "'after' must be an ISO 8601 time or a message id"),
        ("/api/v1/chat/agent:main:main/?after=" + TOO_BIG, 400, "'after' must be an ISO 8601 time"),
        ("/api/v1/chat/agent:main:main/?after=9999-12-31T23:59:59-23:00", 400, "'after' must be an ISO"),
    ],
)
def test_a_bad_api_parameter_is_a_json_error_naming_it(web, gw, url, status, message):
    response = web.get(url)
    assert response.status_code == status
    assert response.json()["error"].startswith(message)


def test_the_api_still_takes_an_id_or_a_naive_time(web, gw):
    assert web.get(f"/api/v1/agents/?gateway={gw.pk}").status_code == 200
    assert web.get("/api/v1/gateways/?offset=100000").status_code == 200
    chat = web.get("/api/v1/chat/agent:main:main/?after=2000-01-01T00:00:00").json()["results"]
    assert [m["text"] for m in chat] == ["hello"]
    assert web.get("/api/v1/chat/agent:main:main/?after=0").json()["results"][0]["text"] == "hello"


# --- the API: every error is JSON -------------------------------------------------------------------------


@pytest.fixture(params=[False, True], ids=["debug-off", "debug-on"])
def debug(request, settings):
    settings.DEBUG = request.param
    return request.param


def test_a_post_to_the_api_is_a_json_405_not_a_csrf_page(debug, operator, gw):
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    for url in ["/api/v1/gateways/", "/api/v1/schema/", "/api/v1/nowhere/"]:
        response = client.post(url)
        assert response.status_code in (404, 405), url
        assert response["Content-Type"] == "application/json"
        assert "error" in response.json()
    response = client.post("/api/v1/gateways/")
    assert response.status_code == 405 and response["Allow"] == "GET"
    assert response.json() == {"error": "method POST is not allowed here (allowed: GET)", "code": "method"}


def test_api_404s_are_json(debug, web):
    for url in ["/api/", "/api/v2/", "/api/v1/gateway"]:
        response = web.get(url)
        assert response.status_code == 404, url
        assert response.json() == {"error": f"no API endpoint at {url}", "code": "not_found"}


def test_401_is_json(debug, client, gw):
    response = client.get("/api/v1/gateways/")
    assert response.status_code == 401 and "error" in response.json()
    response = client.get("/api/v1/gateways/", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401 and "error" in response.json()


def test_an_unexpected_error_is_a_logged_json_500(debug, operator, gw, monkeypatch, caplog):
    """The last resort: a bug in a view is logged and answered in JSON, also with DEBUG on
    (Django would answer with its HTML debug page)."""

    def broken() -> list:
        raise RuntimeError("a bug")

    monkeypatch.setattr(api.registry, "batches", broken)
    _, raw = make_api_token(operator)
    client = Client(raise_request_exception=False)
    with caplog.at_level(logging.ERROR, logger="dashboard.api"):
        response = client.get("/api/v1/batches/", headers={"Authorization": f"Bearer {raw}"})
    assert response.status_code == 500
    assert response.json() == {"error": "internal error: it has been logged", "code": "error"}
    assert "a bug" not in response.content.decode()
    assert any(r.exc_info and "a bug" in str(r.exc_info[1]) for r in caplog.records)


def test_pages_keep_html_errors(debug, web):
    response = web.get("/gateways/1/config/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_too_many_query_fields_is_a_json_400_under_the_api(web):
    query = "&".join(f"f{i}=1" for i in range(1100))  # past DATA_UPLOAD_MAX_NUMBER_FIELDS
    response = web.get(f"/api/v1/gateways/?{query}")
    assert response.status_code == 400
    assert "error" in response.json()
    assert web.get(f"/?{query}").status_code == 400


def _a_real_lock_timeout(tmp_path) -> Exception:
    """The error SQLite gives a second writer whose lock wait ran out, as Django raises it."""
    import sqlite3

    from django.db import OperationalError

    path = tmp_path / "busy.sqlite3"
    holder = sqlite3.connect(path, timeout=0)
    holder.execute("create table t (x)")
    holder.execute("begin immediate")
    holder.execute("insert into t values (1)")
    other = sqlite3.connect(path, timeout=0)
    try:
        other.execute("insert into t values (2)")
    except sqlite3.OperationalError as exc:
        return OperationalError(str(exc))
    finally:
        other.close()
        holder.close()
    raise AssertionError("the second writer was not refused")


@pytest.mark.django_db
def test_a_database_too_busy_to_answer_is_a_503_with_retry_after_not_a_500(tmp_path, rf, operator):
    from dashboard.middleware import HttpErrorsMiddleware

    error = _a_real_lock_timeout(tmp_path)
    assert "database is locked" in str(error)
    middleware = HttpErrorsMiddleware(lambda request: None)  # type: ignore[arg-type,return-value]
    api = rf.post("/api/v1/runs/")
    response = middleware.process_exception(api, error)
    assert response is not None and response.status_code == 503
    assert response["Retry-After"] == "1"
    assert json.loads(response.content)["code"] == "busy"
    page = rf.get("/queue/")
    page.user = operator
    response = middleware.process_exception(page, error)
    assert response is not None and response.status_code == 503 and b"Try again" in response.content
    # Any other database error is still an error, not "busy".
    from django.db import OperationalError

    assert middleware.process_exception(page, OperationalError("no such table: x")) is None
