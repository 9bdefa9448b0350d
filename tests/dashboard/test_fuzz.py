"""Fuzzing every API endpoint and page query parameter: no response is a 500, every API error is
JSON with an ``error`` key.

- The API: schemathesis drives the published OpenAPI description (``dashboard.openapi``) through
  the WSGI transport into the real Django app, with data that fits the schema (positive) and data
  that does not (negative), authenticated with a bearer token.
- Pages and the API again: hypothesis text for every query parameter a view reads, with the inputs
  that used to break them (non-ASCII digits such as ``²``, ids past 2^63, NUL, huge numbers).

The number of requests made is printed at the end of the module (the closing note quotes it).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, time
from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from dashboard import openapi
from scheduler.models import Job, Schedule, Watch
from tests.support.factories import (
    make_agent,
    make_api_token,
    make_batch_run,
    make_chat,
    make_config,
    make_gateway,
    make_session,
)
from webhooks.models import Delivery, Endpoint

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_prefix"), pytest.mark.redis]

SCHEMA = schemathesis.openapi.from_dict(openapi.build())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
REQUESTS: Counter[str] = Counter()
FUZZ = settings(
    max_examples=20,
    deadline=None,
    database=None,  # no example database in the work tree; every run explores afresh
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module", autouse=True)
def _report_request_count(request) -> Iterator[None]:
    yield
    line = f"fuzz: {sum(REQUESTS.values())} requests, " + ", ".join(
        f"{k} {v}" for k, v in sorted(REQUESTS.items())
    )
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():  # shown even when the tests pass
        print(f"\n{line}")


@pytest.fixture
def fleet(db) -> dict[str, Any]:
    gateway = make_gateway("alpha", status="connected")
    make_gateway("12")  # a gateway whose name is digits (?gateway= takes names first)
    main = make_agent(gateway, "main", is_default=True)
    make_agent(gateway, "writer", parent=main)
    make_session(gateway, "agent:main:main", agent_key="main", status="active")
    chat = make_chat(gateway, "agent:main:main", "hello", message_id="m1")
    old = make_config(gateway, "h1")
    new = make_config(gateway, "h2", diff="-a\n+b")
    make_batch_run("BATCH-001", gateway, status="ok")
    triggers(Job.objects.create(name="nightly", kind="noop"))
    return {"gateway": gateway, "agent": main, "chat": chat, "configs": (old, new)}


def triggers(job: Job) -> None:
    """A schedule of each kind, a webhook endpoint with a delivery and a watch, so the trigger
    endpoints answer rows (their shape checked against the schema), not empty lists."""
    for fields in (
        {"cron": "0 9 * * 1-5", "timezone": "Europe/Berlin"},
        {"name": "every", "kind": "interval", "every_seconds": 86400, "at_time": time(9)},
        {"name": "once", "kind": "at", "at_datetime": datetime(2030, 1, 1, tzinfo=UTC)},
    ):
        Schedule.objects.create(job=job, **fields)
    endpoint = Endpoint.objects.create(slug="hook", provider="github", secret="s3cret", job=job)
    Delivery.objects.create(endpoint=endpoint, verdict="bad_signature", status_code=401, headers={"a": "b"})
    Watch.objects.create(name="inbox", directory="/tmp/inbox", events=["created"], job=job)


@pytest.fixture
def wsgi_app() -> Iterator[WSGIHandler]:
    """The project as a WSGI app for schemathesis' transport. Like Django's test client, keep the
    request signals from closing the test's database connection (the test runs in a transaction)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield WSGIHandler()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.fixture
def bearer(admin_user) -> dict[str, str]:
    """An admin's admin-role token, so the role-gated endpoints (audit) answer too."""
    _, raw = make_api_token(admin_user, role="admin")
    return {"Authorization": f"Bearer {raw}"}


def check(status: int, content_type: str, body: bytes, where: str) -> None:
    assert status < 500, f"{status} from {where}: {body[:500]!r}"
    if where.startswith("/api/") and status >= 400:
        assert content_type.startswith("application/json"), f"{status} from {where} is {content_type}"
        assert isinstance(json.loads(body)["error"], str), where


# --- the API, from its schema ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
def test_the_api_never_answers_500(fleet, wsgi_app, bearer, operation, mode):
    @FUZZ
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(app=wsgi_app, headers=bearer)
        REQUESTS[f"api-{mode}"] += 1
        content_type = {k.lower(): v for k, v in response.headers.items()}.get("content-type", "")
        if isinstance(content_type, list):
            content_type = ", ".join(content_type)
        check(response.status_code, content_type, response.content, case.formatted_path)
        if mode == GenerationMode.POSITIVE and response.status_code == 200:
            case.validate_response(response, checks=[schemathesis.checks.response_schema_conformance])

    try:
        run()
    except Unsatisfiable:
        # a public endpoint without parameters or body (health) has nothing to make invalid
        if mode == GenerationMode.NEGATIVE and not list(operation.iter_parameters()) and not operation.body:
            pytest.skip("nothing to negate")
        raise


# --- pages and API query strings, from hypothesis text ----------------------------------------------------

NASTY = st.sampled_from(
    ["²", "٣", "١٢", "𝟗", "৭", "Ⅻ", str(2**63), str(2**63 - 1), "9" * 30, "9" * 5000, "-1", "0", " 7", "1e3",
     "0x1f", "1_000", "+5", "\x00", "%00", "1\x00", "NaN", "", "1.0", "2026-01-01T00:00:00",
     "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:00", "active", "BATCH-001", "alpha", "12"]
)  # fmt: skip
VALUE = st.one_of(
    NASTY,
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(alphabet=st.characters(categories=["Nd"]), min_size=1, max_size=25),  # digits of any script
    st.text(max_size=40),
)
ID = st.one_of(
    st.sampled_from(["1", "2", str(2**63 - 1), str(2**63), "9" * 19, "9" * 20, "0"]),
    st.integers(min_value=0, max_value=2**66).map(str),
)

PAGE_PARAMS = {
    "/": ["status", "agent", "q", "gateway"],
    "/batches/": ["batch", "status", "page"],
    "/gateways/{g}/config/": ["a", "b"],
    "/gateways/{g}/sessions/agent:main:main/": ["before"],
    "/fragments/gateways/{g}/": ["status", "agent", "q"],
    "/fragments/gateways/{g}/agents/{agent}/sessions/": ["status", "agent", "q"],
    "/fragments/gateways/{g}/health/": [],
    "/gateways/{g}/messages/{msg}/": [],
}


def api_query_pages() -> dict[str, list[str]]:
    """Every API path with the query parameters its declaration names."""
    pages = {}
    for route, pattern in openapi.api_routes():
        op = openapi.declaration(pattern)
        assert op is not None
        path = openapi.openapi_path(route).replace("{session_key}", "agent:main:main")
        path = path.replace("{run_id}", "1").replace("{name}", "nightly")
        path = path.replace("{trigger_id}", "1").replace("{delivery_id}", "1")
        pages[path] = [p.name for p in op.params if p.location == "query"]
    return pages


@pytest.mark.parametrize("area", ["pages", "api"])
def test_query_parameters_never_give_500(fleet, admin_user, bearer, area):
    client = Client(raise_request_exception=False)
    client.force_login(admin_user)
    pages = PAGE_PARAMS if area == "pages" else api_query_pages()
    ids = {"g": fleet["gateway"].pk, "agent": fleet["agent"].pk, "msg": fleet["chat"].pk}

    @settings(FUZZ, max_examples=200)
    @given(
        page=st.sampled_from(sorted(pages)),
        values=st.dictionaries(
            st.sampled_from(sorted({n for v in pages.values() for n in v} | {"x"})), VALUE
        ),
        path_ids=st.fixed_dictionaries({"g": st.one_of(st.just(str(ids["g"])), ID), "agent": ID, "msg": ID}),
        use_real_ids=st.booleans(),
    )
    def run(page: str, values: dict[str, str], path_ids: dict[str, str], use_real_ids: bool) -> None:
        path = page.format(**(ids if use_real_ids else path_ids))
        query = {k: v for k, v in values.items() if k in pages[page] or k == "x"}
        response = client.get(path, query, headers=bearer if area == "api" else {})
        REQUESTS[f"{area}-query"] += 1
        check(response.status_code, response.get("Content-Type", ""), response.content, path)

    run()


def test_the_fuzz_covers_every_api_endpoint_and_query_parameter():
    declared = {
        (openapi.openapi_path(route), p.name)
        for route, pattern in openapi.api_routes()
        for p in openapi.declaration(pattern).params  # type: ignore[union-attr]
    }
    fuzzed = {(op.path, param.name) for op in OPERATIONS for param in op.iter_parameters()}
    assert {op.path for op in OPERATIONS} == {openapi.openapi_path(r) for r, _ in openapi.api_routes()}
    assert declared <= fuzzed
