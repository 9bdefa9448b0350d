"""/api/v1/schema/ describes every API endpoint (built from the declaration next to each view)
and /api/v1/ lists them: a new endpoint without a declaration fails here."""

from __future__ import annotations

import pytest
import schemathesis
from openapi_spec_validator import validate

from dashboard import openapi
from dashboard.api import MAX_LIMIT, MAX_OFFSET
from tests.support.factories import make_api_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def bearer(admin_user):
    _, raw = make_api_token(admin_user, role="admin")  # the audit endpoint needs the admin role
    return {"Authorization": f"Bearer {raw}"}


def test_every_api_route_has_a_schema_entry():
    routes = list(openapi.api_routes())
    assert len(routes) >= 8
    missing = [route for route, pattern in routes if openapi.declaration(pattern) is None]
    assert missing == [], f"add @openapi.operation(...) to the views of {missing}"


def test_every_path_parameter_is_declared_as_one():
    for route, pattern in openapi.api_routes():
        op = openapi.declaration(pattern)
        assert op is not None
        declared = [p.name for p in op.params if p.location == "path"]
        assert declared == openapi.route_params(route), route


def test_the_schema_is_served_and_lists_every_route(client, bearer):
    response = client.get("/api/v1/schema/", headers=bearer)
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"] == "3.1.0"
    assert set(schema["paths"]) == {openapi.openapi_path(r) for r, _ in openapi.api_routes()}
    assert "/api/v1/chat/{session_key}/" in schema["paths"]
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token issued in the admin (API tokens).",
    }
    sessions = schema["paths"]["/api/v1/sessions/"]["get"]
    by_name = {p["name"]: p for p in sessions["parameters"]}
    assert by_name["limit"]["schema"] == {
        "type": "integer",
        "minimum": 0,
        "maximum": MAX_LIMIT,
        "default": 100,
    }
    assert by_name["offset"]["schema"]["maximum"] == MAX_OFFSET
    assert by_name["status"]["schema"]["enum"] == ["active", "idle", "offline"]
    assert sessions["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }
    assert schema["components"]["schemas"]["Error"]["required"] == ["error"]


def test_the_schema_is_valid_openapi_3_1(client, bearer):
    schema = client.get("/api/v1/schema/", headers=bearer).json()
    validate(schema)  # the OpenAPI 3.1 meta-schema (openapi-spec-validator); raises if invalid
    loaded = schemathesis.openapi.from_dict(schema)
    operations = [result.ok() for result in loaded.get_all_operations()]
    assert len(operations) == sum(len(openapi.declarations(p)) for _, p in openapi.api_routes())


def test_the_schema_and_index_need_authentication(client):
    for url in ["/api/v1/", "/api/v1/schema/"]:
        response = client.get(url)
        assert response.status_code == 401 and "error" in response.json()


def test_the_index_lists_the_endpoints_with_urls_and_summaries(client, bearer):
    body = client.get("/api/v1/", headers=bearer).json()
    assert body["schema"] == "http://testserver/api/v1/schema/"
    by_name = {e["name"]: e for e in body["endpoints"]}
    assert set(by_name) == {p.name for _, p in openapi.api_routes()}
    assert by_name["sessions"]["url"] == "http://testserver/api/v1/sessions/"
    assert by_name["chat"]["path"] == "/api/v1/chat/{session_key}/"
    assert all(e["summary"] and "\n" not in e["summary"] for e in body["endpoints"])
    needs_input = {
        openapi.openapi_path(route)
        for route, pattern in openapi.api_routes()
        if any(op.one_of for op in openapi.declarations(pattern))
    }
    assert needs_input == {"/api/v1/triggers/preview/"}
    for entry in body["endpoints"]:
        if "{" not in entry["path"] and entry["method"] == "GET":
            expected = 400 if entry["path"] in needs_input else 200  # 400: "give at least one of …"
            assert client.get(entry["url"], headers=bearer).status_code == expected, entry["url"]
