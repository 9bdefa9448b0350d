"""The read-only JSON API (/api/v1/): login session or bearer token, JSON errors, pagination,
and never a gateway token in a response."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dashboard.models import ApiToken
from tests.support.factories import (
    make_agent,
    make_api_token,
    make_batch_run,
    make_chat,
    make_config,
    make_gateway,
    make_session,
)

pytestmark = pytest.mark.django_db

SECRET_TOKEN = "api-test-gateway-token-3f9a71"  # a marker to look for in every response
T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
ENDPOINTS = [
    "/api/v1/gateways/",
    "/api/v1/agents/",
    "/api/v1/sessions/",
    "/api/v1/config-history/",
    "/api/v1/chat/agent:writer:main/",
    "/api/v1/batches/",
]


@pytest.fixture
def fleet(db):
    alpha = make_gateway(
        "alpha", url="ws://127.0.0.1:18789/", token=SECRET_TOKEN, status="connected", latency_ms=12.5
    )
    beta = make_gateway("beta", url="ws://127.0.0.1:18989/", token=SECRET_TOKEN)
    main = make_agent(alpha, "main", name="Main", is_default=True)
    make_agent(alpha, "researcher", name="Researcher", parent=main)
    make_agent(alpha, "writer", name="Writer")
    make_agent(beta, "main", name="Beta main", is_default=True)
    for i, (agent, status) in enumerate([("main", "active"), ("writer", "idle"), ("writer", "offline")]):
        make_session(
            alpha,
            f"agent:{agent}:s{i}",
            agent_key=agent,
            status=status,
            gw_updated_at=T0 - timedelta(minutes=i),
        )
    make_session(beta, "agent:main:main", agent_key="main", status="active")
    make_config(alpha, "h1", config={"gateway": {"auth": {"token": "__REDACTED__"}}}, created_at=T0)
    make_config(
        alpha,
        "h2",
        changed_paths=["agents.entries.writer.identity.emoji"],
        diff="-a\n+b",
        created_at=T0 + timedelta(hours=1),
    )
    make_config(beta, "hb", created_at=T0)
    for i in range(5):
        make_chat(
            alpha,
            "agent:writer:main",
            f"message {i}",
            message_id=f"m{i}",
            role="user" if i % 2 == 0 else "assistant",
            timestamp=T0 + timedelta(minutes=i),
        )
    make_batch_run("BATCH-001", alpha, status="ok", counts={"sessions": 3}, duration_ms=12)
    make_batch_run("BATCH-004", status="error", error="RuntimeError: boom")
    return alpha, beta


@pytest.fixture
def api(client, operator):
    client.force_login(operator)
    return client


@pytest.fixture
def bearer(client, operator):
    _, raw = make_api_token(operator, "ops script")
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def get(client, url, **extra):
    response = client.get(url, **extra)
    assert response["Content-Type"] == "application/json"
    assert SECRET_TOKEN not in response.content.decode()
    return response


# --- authentication -------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ENDPOINTS)
def test_it_answers_anonymous_requests_with_401_json(client, fleet, url):
    response = get(client, url)
    assert response.status_code == 401
    assert "authentication required" in response.json()["error"]


@pytest.mark.parametrize("url", ENDPOINTS)
def test_it_answers_a_logged_in_user(api, fleet, url):
    response = get(api, url)
    assert response.status_code == 200
    assert set(response.json()) == {"next", "previous", "results"}


@pytest.mark.parametrize("url", ENDPOINTS)
def test_it_answers_a_bearer_token(client, bearer, fleet, url):
    response = get(client, url, **bearer)
    assert response.status_code == 200
    assert response.json()["results"]


def test_a_bearer_token_records_its_last_use(client, bearer, fleet):
    token = ApiToken.objects.get()
    assert token.last_used_at is None
    get(client, "/api/v1/gateways/", **bearer)
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_a_bearer_token_writes_its_last_use_at_most_once_a_minute(client, bearer, fleet):
    with time_machine.travel(datetime(2026, 12, 1, 12, 0, tzinfo=UTC), tick=False) as traveller:
        get(client, "/api/v1/gateways/", **bearer)
        with CaptureQueriesContext(connection) as queries:
            traveller.shift(timedelta(seconds=59))
            assert get(client, "/api/v1/gateways/", **bearer).status_code == 200
        assert not [q for q in queries.captured_queries if q["sql"].startswith('UPDATE "dashboard_apitoken"')]
        assert ApiToken.objects.get().last_used_at == datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
        traveller.shift(timedelta(seconds=1))
        get(client, "/api/v1/gateways/", **bearer)
        assert ApiToken.objects.get().last_used_at == datetime(2026, 12, 1, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "header",
    [
        "Bearer af_not-a-real-token",
        "Bearer ",
        "Basic b3BlcmF0b3I6b3BlcmF0b3ItcGFzcw==",
        "af_no-scheme",
        "Token af_wrong-scheme",
    ],
)
def test_a_bad_token_gets_401(client, fleet, header):
    response = get(client, "/api/v1/gateways/", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert "error" in response.json()


def test_a_token_of_a_deactivated_user_gets_401(client, bearer, fleet, operator):
    operator.is_active = False
    operator.save()
    assert get(client, "/api/v1/gateways/", **bearer).status_code == 401


def test_only_the_tokens_hash_is_stored(operator):
    token, raw = ApiToken.issue(operator, "ci")
    assert raw.startswith("af_") and raw.startswith(token.prefix)
    assert token.token_hash == ApiToken.hash(raw) != raw
    assert raw not in str(ApiToken.objects.values_list().get())


def test_the_api_is_read_only(api, fleet):
    response = api.post("/api/v1/gateways/", {})
    assert response.status_code == 405


def test_an_unknown_endpoint_is_a_json_404(api):
    response = get(api, "/api/v1/nothing-here/")
    assert response.status_code == 404
    assert response.json() == {"error": "no API endpoint at /api/v1/nothing-here/", "code": "not_found"}


# --- endpoints ------------------------------------------------------------------------------------


def test_gateways_lists_status_and_latency_without_the_token(api, fleet):
    results = get(api, "/api/v1/gateways/").json()["results"]
    assert [g["name"] for g in results] == ["alpha", "beta"]
    alpha = results[0]
    assert (alpha["status"], alpha["latency_ms"], alpha["url"]) == (
        "connected",
        12.5,
        "ws://127.0.0.1:18789/",
    )
    assert "token" not in alpha


def test_agents_have_their_org_chart_parent(api, fleet):
    results = get(api, "/api/v1/agents/?gateway=alpha").json()["results"]
    by_id = {a["id"]: a for a in results}
    assert set(by_id) == {"main", "researcher", "writer"}
    assert by_id["researcher"]["parent"] == "main"
    assert by_id["writer"]["parent"] is None
    assert by_id["main"]["is_default"] is True
    assert len(get(api, "/api/v1/agents/").json()["results"]) == 4


def test_sessions_filter_by_agent_and_status(api, fleet):
    def keys(query):
        return [s["session_key"] for s in get(api, f"/api/v1/sessions/{query}").json()["results"]]

    assert keys("?agent=writer") == ["agent:writer:s1", "agent:writer:s2"]
    assert keys("?agent=writer&status=idle") == ["agent:writer:s1"]
    assert keys("?status=active&gateway=alpha") == ["agent:main:s0"]
    assert sorted(keys("?status=active")) == ["agent:main:main", "agent:main:s0"]
    assert keys("?agent=nobody") == []
    row = get(api, "/api/v1/sessions/?agent=main&gateway=alpha").json()["results"][0]
    assert row["gateway"] == "alpha" and row["updated_at"] == T0.isoformat()


def test_config_history_filters_by_gateway_name_or_id(api, fleet):
    alpha, _ = fleet
    by_name = get(api, "/api/v1/config-history/?gateway=alpha").json()["results"]
    assert [c["hash"] for c in by_name] == ["h2", "h1"]  # newest first
    assert by_name[0]["changed_paths"] == ["agents.entries.writer.identity.emoji"]
    assert by_name[0]["diff"] == "-a\n+b"
    by_id = get(api, f"/api/v1/config-history/?gateway={alpha.pk}").json()["results"]
    assert by_id == by_name


def test_chat_lists_a_sessions_messages_after_a_time_or_id(api, fleet):
    url = "/api/v1/chat/agent:writer:main/"
    everything = get(api, url).json()["results"]
    assert [m["message_id"] for m in everything] == ["m0", "m1", "m2", "m3", "m4"]
    after_time = get(api, url, data={"after": (T0 + timedelta(minutes=2)).isoformat()}).json()["results"]
    assert [m["message_id"] for m in after_time] == ["m3", "m4"]
    after_id = get(api, url, data={"after": str(everything[3]["id"])}).json()["results"]
    assert [m["message_id"] for m in after_id] == ["m4"]
    assert get(api, "/api/v1/chat/agent:nobody:main/").json()["results"] == []


def test_the_page_links_of_a_session_key_with_a_percent_sign_are_valid_uris(api, fleet):
    alpha, _ = fleet
    for i in range(2):
        make_chat(alpha, "agent:main:100%|x", f"m {i}", message_id=f"p{i}")
    body = get(api, "/api/v1/chat/agent:main:100%25%7Cx/", data={"limit": "1"}).json()
    assert body["next"] == "http://testserver/api/v1/chat/agent:main:100%25%7Cx/?limit=1&offset=1"
    assert get(api, body["next"]).json()["results"][0]["message_id"] == "p1"


def test_batches_shows_the_last_run_of_each_batch(api, fleet):
    results = get(api, "/api/v1/batches/").json()["results"]
    assert [b["batch"] for b in results] == ["BATCH-001", "BATCH-002", "BATCH-003", "BATCH-004", "BATCH-005"]
    by_id = {b["batch"]: b for b in results}
    assert by_id["BATCH-001"]["last_run"]["status"] == "ok"
    assert by_id["BATCH-001"]["last_run"]["gateway"] == "alpha"
    assert by_id["BATCH-001"]["last_run"]["counts"] == {"sessions": 3}
    assert by_id["BATCH-004"]["last_run"]["error"] == "RuntimeError: boom"
    assert by_id["BATCH-002"]["last_run"] is None
    assert by_id["BATCH-001"]["name"] == "Session polling"


# --- errors and pagination ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/api/v1/sessions/?status=sleeping", "'status' must be one of active, idle, offline"),
        ("/api/v1/gateways/?limit=ten", "'limit' must be an integer, got 'ten'"),
        ("/api/v1/gateways/?offset=-5", "'offset' must not be negative"),
        ("/api/v1/agents/?limit=1.5", "'limit' must be an integer"),
        ("/api/v1/chat/agent:writer:main/?after=yesterday", "'after' must be an ISO 8601 time"),
        ("/api/v1/chat/agent:writer:main/?after=2026-13-45T99:00:00", "'after' must be an ISO 8601 time"),
    ],
)
def test_bad_parameters_get_a_400_with_a_clear_message(api, fleet, url, message):
    response = get(api, url)
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)


@pytest.mark.parametrize(
    "url", ["/api/v1/agents/", "/api/v1/sessions/", "/api/v1/config-history/", "/api/v1/chat/agent:x:y/"]
)
def test_an_unknown_gateway_is_a_json_404(api, fleet, url):
    response = get(api, f"{url}?gateway=nope")
    assert response.status_code == 404
    assert response.json() == {"error": "no gateway named 'nope'", "code": "not_found"}
    assert get(api, f"{url}?gateway=99999").status_code == 404


def test_lists_are_paginated_with_next_and_previous_links(api, fleet):
    url = "/api/v1/chat/agent:writer:main/"
    first = get(api, url, data={"limit": 2}).json()
    assert [m["message_id"] for m in first["results"]] == ["m0", "m1"]
    assert first["previous"] is None
    assert first["next"] == f"http://testserver{url}?limit=2&offset=2"

    second = get(api, first["next"]).json()
    assert [m["message_id"] for m in second["results"]] == ["m2", "m3"]
    assert second["previous"] == f"http://testserver{url}?limit=2&offset=0"

    last = get(api, second["next"]).json()
    assert [m["message_id"] for m in last["results"]] == ["m4"]
    assert last["next"] is None


def test_pagination_links_keep_the_filters(api, fleet):
    page = get(api, "/api/v1/sessions/?agent=writer&limit=1").json()
    assert "agent=writer" in page["next"] and "offset=1" in page["next"]
    assert get(api, page["next"]).json()["results"][0]["session_key"] == "agent:writer:s2"


def test_the_page_size_is_capped(api, fleet):
    page = get(api, "/api/v1/gateways/?limit=100000").json()
    assert len(page["results"]) == 2 and page["next"] is None
    more = get(api, "/api/v1/gateways/?limit=100000&offset=1").json()
    assert "limit=500" in more["previous"]
