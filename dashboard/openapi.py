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
    """What one endpoint takes and answers. ``result`` is the JSON schema of one item of
    ``results`` for a paginated list, or of the whole body when ``paginated`` is false. A POST
    declares its JSON ``body`` schema and its success statuses (``success``)."""

    summary: str
    result: dict[str, Any]
    params: tuple[Param, ...] = ()
    paginated: bool = True
    errors: tuple[int, ...] = (400, 401)
    public: bool = False  # True: no authentication
    tags: tuple[str, ...] = field(default=("fleet",))
    method: str = "get"
    body: dict[str, Any] | None = None
    success: tuple[int, ...] = (200,)
    one_of: tuple[str, ...] = ()  # query parameters of which at least one must be given

    @property
    def description(self) -> str:
        return f"Give at least one of: {', '.join(self.one_of)}." if self.one_of else ""

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
        view.openapi_ops = [*getattr(view, "openapi_ops", []), op]  # type: ignore[attr-defined]
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


def declarations(pattern: URLPattern) -> list[Operation]:
    """Every operation of a route (``runs/`` has a GET and a POST)."""
    return list(getattr(pattern.callback, "openapi_ops", []))


def declaration(pattern: URLPattern) -> Operation | None:
    """The route's first operation (its GET where it has one)."""
    ops = declarations(pattern)
    return ops[0] if ops else None


def _responses(op: Operation) -> dict[str, Any]:
    descriptions = {
        400: "A parameter or the body is invalid; the message names it.",
        401: "Not logged in and no valid bearer token.",
        403: "The caller's role does not allow this (or a cookie POST without its CSRF token).",
        404: "No such gateway, job, run, trigger or delivery, or nothing at this address.",
        413: "The body is larger than the API accepts.",
        415: "The body is not JSON.",
    }
    ok = {200: "OK", 201: "Created"}
    responses: dict[str, Any] = {
        str(status): {
            "description": ok[status],
            "content": {"application/json": {"schema": op.response_schema()}},
        }
        for status in op.success
    }
    for status in op.errors:
        responses[str(status)] = {
            "description": descriptions[status],
            "content": {"application/json": {"schema": ERROR}},
        }
    responses["405"] = {
        "description": f"Only {op.method.upper()} is allowed.",
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
        ops = declarations(pattern)  # none: the test names it
        for op in ops:
            entry: dict[str, Any] = {
                "operationId": pattern.name if len(ops) == 1 else f"{pattern.name}-{op.method}",
                "summary": op.summary,
                "tags": list(op.tags),
                "parameters": [p.as_openapi() for p in op.params],
                "responses": _responses(op),
            }
            if op.description:
                entry["description"] = op.description
            if op.body is not None:
                entry["requestBody"] = {
                    "required": False,
                    "content": {"application/json": {"schema": op.body}},
                }
            if op.public:
                entry["security"] = []
            paths.setdefault(openapi_path(route), {})[op.method] = entry
    schema: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "AgentFlow API",
            "version": "1",
            "description": "JSON API for ops scripts. Every error is JSON: "
            '{"error": "<message>", "code": "<code>"}. Lists are paginated with limit and offset and '
            "link to the next and previous page. Write endpoints (POST, PATCH, DELETE) need the operator "
            "role; a write authenticated by the session cookie must send the CSRF token (X-CSRFToken).",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {"type": "string", "description": "What was wrong, for a person."},
                        "code": {"type": "string", "description": "What was wrong, for a program."},
                    },
                }
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
    """Every endpoint with its method, path and one-line summary (``GET /api/v1/``)."""
    return [
        {
            "name": pattern.name or "",
            "method": op.method.upper(),
            "path": openapi_path(route),
            "summary": op.summary,
        }
        for route, pattern in api_routes()
        for op in declarations(pattern)
    ]
