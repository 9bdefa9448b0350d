"""The OpenAPI 3.1 description of the JSON API (``/api/v1/schema/``) and its index (``/api/v1/``).

Each API view carries its own declaration (``@openapi.operation(...)`` next to the view in
``dashboard/api.py``); this module walks the URL patterns mounted under the ``api`` namespace
and puts the declarations together, so the published schema is always the routes that exist.
A route without a declaration fails ``tests/dashboard/test_openapi.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.urls import URLPattern, get_resolver

F = TypeVar("F", bound=Callable[..., Any])

ERROR = {"$ref": "#/components/schemas/Error"}


@dataclass(frozen=True)
class Param:
    name: str
    description: str
    schema: dict[str, Any]
    location: str = "query"  # or "path"

    def as_openapi(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "in": self.location,
            "required": self.location == "path",
            "description": self.description,
            "schema": self.schema,
        }


@dataclass(frozen=True)
class Operation:
    """What one GET endpoint takes and answers. ``result`` is the JSON schema of one item of
    ``results`` for a paginated list, or of the whole body when ``paginated`` is false."""

    summary: str
    result: dict[str, Any]
    params: tuple[Param, ...] = ()
    paginated: bool = True
    errors: tuple[int, ...] = (400, 401)
    public: bool = False  # True: no authentication
    tags: tuple[str, ...] = field(default=("fleet",))

    def response_schema(self) -> dict[str, Any]:
        if not self.paginated:
            return self.result
        link = {"type": ["string", "null"], "format": "uri"}
        return {
            "type": "object",
            "required": ["next", "previous", "results"],
            "properties": {
                "next": link,
                "previous": link,
                "results": {"type": "array", "items": self.result},
            },
        }


def operation(op: Operation) -> Callable[[F], F]:
    """Attach ``op`` to an API view (put it outermost, above ``@api_view``)."""

    def decorate(view: F) -> F:
        view.openapi = op  # type: ignore[attr-defined]
        return view

    return decorate


def obj(**properties: Any) -> dict[str, Any]:
    """A JSON schema object whose every listed property is present."""
    return {"type": "object", "required": list(properties), "properties": properties}


def nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **extra}


_CONVERTER = re.compile(r"<(?:(?P<kind>[a-z]+):)?(?P<name>\w+)>")


def openapi_path(route: str) -> str:
    """``api/v1/chat/<path:session_key>/`` → ``/api/v1/chat/{session_key}/``."""
    return "/" + _CONVERTER.sub(lambda m: "{" + m["name"] + "}", route)


def route_params(route: str) -> list[str]:
    return [m["name"] for m in _CONVERTER.finditer(route)]


def api_routes() -> Iterator[tuple[str, URLPattern]]:
    """(route, pattern) for every named URL pattern of the ``api`` namespace, in order; the
    unnamed catch-all that answers a JSON 404 is not an endpoint."""
    prefix, resolver = get_resolver().namespace_dict["api"]
    for pattern in resolver.url_patterns:
        if isinstance(pattern, URLPattern) and pattern.name:
            yield prefix + str(pattern.pattern), pattern


def declaration(pattern: URLPattern) -> Operation | None:
    return getattr(pattern.callback, "openapi", None)


def _responses(op: Operation) -> dict[str, Any]:
    descriptions = {
        400: "A parameter is invalid; the message names it.",
        401: "Not logged in and no valid bearer token.",
        403: "The caller's role does not allow this.",
        404: "No such gateway or nothing at this address.",
    }
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": {"application/json": {"schema": op.response_schema()}}}
    }
    for status in op.errors:
        responses[str(status)] = {
            "description": descriptions[status],
            "content": {"application/json": {"schema": ERROR}},
        }
    responses["405"] = {
        "description": "Only GET is allowed.",
        "content": {"application/json": {"schema": ERROR}},
    }
    responses["default"] = {
        "description": "Any other error, JSON like every error.",
        "content": {"application/json": {"schema": ERROR}},
    }
    return responses


def build(server_url: str = "") -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for route, pattern in api_routes():
        op = declaration(pattern)
        if op is None:
            continue  # the test names it
        get: dict[str, Any] = {
            "operationId": pattern.name,
            "summary": op.summary,
            "tags": list(op.tags),
            "parameters": [p.as_openapi() for p in op.params],
            "responses": _responses(op),
        }
        if op.public:
            get["security"] = []
        paths[openapi_path(route)] = {"get": get}
    schema: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "AgentFlow API",
            "version": "1",
            "description": 'Read-only JSON API for ops scripts. Every error is JSON: {"error": "..."}. '
            "Lists are paginated with limit and offset and link to the next and previous page.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Error": obj(error={"type": "string", "description": "What was wrong, for a person."})
            },
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token issued in the admin (API tokens).",
                },
                "session": {"type": "apiKey", "in": "cookie", "name": "sessionid"},
            },
        },
        "security": [{"bearer": []}, {"session": []}],
    }
    if server_url:
        schema["servers"] = [{"url": server_url}]
    return schema


def index() -> list[dict[str, str]]:
    """Every endpoint with its path and one-line summary (``GET /api/v1/``)."""
    return [
        {"name": pattern.name or "", "path": openapi_path(route), "summary": op.summary}
        for route, pattern in api_routes()
        if (op := declaration(pattern)) is not None
    ]
