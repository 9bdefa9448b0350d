"""Websocket origin check: the page's Origin must be this site (scheme, host and port) or one of
``CSRF_TRUSTED_ORIGINS``.

Channels' ``AllowedHostsOriginValidator`` compares the Origin's host name with ``ALLOWED_HOSTS``
only, so a page served by anything else on the same host (``http://127.0.0.1:9999``) could open
the dashboard socket with the user's cookie. This is the rule Django's CSRF middleware applies to
unsafe requests, applied to the websocket handshake: the site's own origin is the request's
scheme (``SECURE_PROXY_SSL_HEADER`` honoured behind a TLS proxy) and Host (``USE_X_FORWARDED_HOST``
honoured), and the Host itself must be in ``ALLOWED_HOSTS``.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

log = logging.getLogger("agentflow.origin")

DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_tuple(origin: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin, or None when it is not an http(s) origin."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.path or parts.query or parts.username:
        return None
    return scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme]


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {name.decode("latin1").lower(): value.decode("latin1") for name, value in scope.get("headers", [])}


def _allowed_hosts() -> list[str]:
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:  # what Django's HttpRequest.get_host() allows then
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return allowed


def site_origin(scope: dict[str, Any]) -> str | None:
    """The origin this request was made to (``http(s)://host[:port]``), or None when its Host is
    missing or not in ``ALLOWED_HOSTS``."""
    headers = _headers(scope)
    host = headers.get("host", "")
    if settings.USE_X_FORWARDED_HOST and headers.get("x-forwarded-host"):
        host = headers["x-forwarded-host"].split(",")[0].strip()
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, _allowed_hosts()):
        return None
    secure = scope.get("scheme") in ("wss", "https")
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        name, value = proxy_header
        name = name.removeprefix("HTTP_").replace("_", "-").lower()
        if name in headers:
            secure = headers[name].split(",")[0].strip() == value
    return f"{'https' if secure else 'http'}://{host}"


def origin_allowed(origin: str, scope: dict[str, Any]) -> bool:
    """True when ``origin`` is the site's own origin or a trusted one (exact, or a ``*.`` wildcard
    of ``CSRF_TRUSTED_ORIGINS`` as Django's CSRF check reads it)."""
    theirs = _origin_tuple(origin)
    if theirs is None:
        return False
    own = site_origin(scope)
    if own is not None and _origin_tuple(own) == theirs:
        return True
    scheme, host, port = theirs
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        if "://*." in trusted:
            t_scheme, _, t_netloc = trusted.partition("://")
            t_domain, t_port = split_domain_port(t_netloc[1:])
            wanted_port = int(t_port) if t_port else DEFAULT_PORTS.get(t_scheme.lower())
            if t_scheme.lower() == scheme and port == wanted_port and is_same_domain(host, t_domain):
                return True
        elif _origin_tuple(trusted) == theirs:
            return True
    return False


class SameOriginValidator:
    """ASGI middleware for websockets: refuses the handshake (HTTP 403) unless the Origin header is
    the site's own origin or a trusted one. A missing Origin is refused too: browsers always send
    it on websockets, and the socket carries the user's session."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            raise ValueError("SameOriginValidator only handles websockets")
        origin = _headers(scope).get("origin", "")
        if not origin_allowed(origin, scope):
            log.warning(
                "refused a websocket from origin %r (site origin %s)", origin[:200], site_origin(scope)
            )
            denier = WebsocketDenier()
            return await denier(scope, receive, send)
        return await self.application(scope, receive, send)
