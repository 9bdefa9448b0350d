"""Pages and fragments, one module per area. Views parse input, check access, call a domain
function and render; they hold no logic of their own."""

from __future__ import annotations

from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class HtmxHttpRequest(HttpRequest):
    """The request as ``django_htmx.middleware.HtmxMiddleware`` leaves it (for the type checker:
    the middleware sets ``request.htmx`` on every request, which plain ``HttpRequest`` lacks)."""

    htmx: HtmxDetails
