"""Bad input is a 400 and the API's errors are JSON, whatever raised them.

- A :class:`~dashboard.params.BadParam` from any view becomes a 400 naming the parameter: JSON
  under /api/, the ``400.html`` page elsewhere.
- A NUL character in the path or the query string is refused up front (PostgreSQL cannot store
  or compare it, and no id, name or session key contains one).
- Under /api/ every error response is JSON with an ``error`` key: a 404 or 405 from Django
  itself, a 403 from the CSRF check, Django's debug pages when DEBUG is on, and, as a last
  resort, an unexpected exception (logged, answered as a JSON 500).
- A database too busy to answer in time (SQLite's single writer "database is locked" under
  overload, a PostgreSQL serialization failure) is a 503 with ``Retry-After``, not a 500:
  nothing was written, and the same request can be sent again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from agentflow.lib.dbbusy import is_busy

from .params import BadParam

logger = logging.getLogger("dashboard.api")

API_PREFIX = "/api/"  # where agentflow/urls.py mounts dashboard.api_urls


def is_api(request: HttpRequest) -> bool:
    return request.path_info.startswith(API_PREFIX)


_CODES = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found", 405: "method"}


def json_error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message, "code": _CODES.get(status, "error")}, status=status)


def bad_request(request: HttpRequest, message: str) -> HttpResponse:
    if is_api(request):
        return json_error(400, message)
    return render(request, "400.html", {"message": message}, status=400)


BUSY_RETRY_AFTER = 1  # seconds


def busy(request: HttpRequest) -> HttpResponse:
    message = "The database is busy right now; nothing was changed. Try again in a moment."
    if is_api(request):
        response: HttpResponse = JsonResponse({"error": message, "code": "busy"}, status=503)
    else:
        response = render(request, "503.html", {"message": message}, status=503)
    response["Retry-After"] = str(BUSY_RETRY_AFTER)
    return response


def _has_nul(request: HttpRequest) -> bool:
    if "\x00" in request.path_info:
        return True
    return any("\x00" in key or any("\x00" in v for v in values) for key, values in request.GET.lists())


def _generic_message(request: HttpRequest, response: HttpResponse) -> str:
    status = response.status_code
    if status == 404:
        return f"no API endpoint at {request.path}"
    if status == 405:
        return f"method {request.method} is not allowed here (allowed: {response.get('Allow', 'GET')})"
    if status == 401:
        return "authentication required"
    if status == 403:
        return "forbidden"
    if status >= 500:
        return "internal error: it has been logged"
    return getattr(response, "reason_phrase", "") or "error"


class HttpErrorsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            if _has_nul(request):
                return bad_request(request, "NUL characters are not allowed in the URL")
        except (BadRequest, SuspiciousOperation) as exc:  # e.g. too many query fields
            return bad_request(request, str(exc) or "malformed query string")
        response = self.get_response(request)
        if is_api(request) and response.status_code >= 400 and not _is_json(response):
            allow = response.get("Allow")
            response = json_error(response.status_code, _generic_message(request, response))
            if allow:
                response["Allow"] = allow
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, BadParam):
            return bad_request(request, exception.message)
        if is_busy(exception):
            logger.warning("database busy answering %s %s: %s", request.method, request.path, exception)
            return busy(request)
        if not is_api(request):
            return None  # Django's own handlers for pages
        if isinstance(exception, Http404):
            return json_error(404, str(exception) or f"nothing at {request.path}")
        if isinstance(exception, PermissionDenied):
            return json_error(403, str(exception) or "forbidden")
        if isinstance(exception, BadRequest | SuspiciousOperation):
            return json_error(400, str(exception) or "bad request")
        logger.error("unexpected error answering %s %s", request.method, request.path, exc_info=exception)
        return json_error(500, "internal error: it has been logged")


def _is_json(response: HttpResponse) -> bool:
    return response.get("Content-Type", "").startswith("application/json")
