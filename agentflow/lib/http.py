"""Outbound HTTP: the one choke point (healthchecks ``hc/lib/curl.py``'s idea) for notifications.

:func:`request` sends one request with a timeout and no redirects followed, and returns a
:class:`Response` for **any** HTTP status (the caller decides what a 500 means); only "no answer"
raises: :class:`Unreachable` (refused, DNS, TLS, reset) or :class:`TimedOut`, both
:class:`HttpError`. Their messages name the method and the URL as :func:`redact` shows it
(scheme and host only: a Slack incoming-webhook URL *is* a secret, a webhook URL may carry a
token in its path or query), and any ``secrets`` passed are scrubbed from them too. Nothing here
logs a URL or a header.

Tests patch nothing here: they point it at real receivers on 127.0.0.1.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

USER_AGENT = "AgentFlow"
BODY_MAX_BYTES = 64 * 1024  # read at most this much of an answer (a receiver may send a page)


class HttpError(Exception):
    """No answer from the receiver; the message never holds a secret or the URL's path."""


class Unreachable(HttpError):
    pass


class TimedOut(HttpError):
    pass


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: Mapping[str, str]
    duration_ms: float

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def text(self, limit: int = 2000) -> str:
        """The body as text, cut to ``limit`` characters (for a delivery log)."""
        return self.body.decode("utf-8", errors="replace")[:limit]


def redact(url: str) -> str:
    """``https://hooks.example.test/services/T0/B0/secret`` → ``https://hooks.example.test/…``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(a malformed URL)"
    rest = "/…" if (parts.path not in ("", "/") or parts.query) else "/"
    return f"{parts.scheme or '?'}://{host}{port}{rest}"


def scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[secret]")
    return text


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as it is (3xx): following it would resend the body and headers
    (a bearer token) to wherever the receiver points."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def request(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    secrets: Iterable[str] = (),
) -> Response:
    """Send one request; a :class:`Response` for any status, :class:`HttpError` for no answer."""
    shown = f"{method} {redact(url)}"
    parts = urlsplit(url)
    secrets = [*secrets, url, parts.path if len(parts.path) > 1 else "", parts.query]
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Unreachable(f"{shown}: only http and https URLs are sent to")
    req = urllib.request.Request(url, data=body, method=method)  # noqa: S310 - scheme checked above
    req.add_header("User-Agent", USER_AGENT)
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    started = time.perf_counter()
    try:
        with _opener.open(req, timeout=timeout) as answer:
            raw = answer.read(BODY_MAX_BYTES)
            status, answer_headers = answer.status, dict(answer.headers.items())
    except urllib.error.HTTPError as exc:  # an answer, only not a 2xx one
        with exc:
            raw = exc.read(BODY_MAX_BYTES) if exc.fp is not None else b""
        status, answer_headers = exc.code, dict(exc.headers.items()) if exc.headers else {}
    except TimeoutError:
        raise TimedOut(f"{shown}: no answer within {timeout:g} s") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError | socket.timeout):
            raise TimedOut(f"{shown}: no answer within {timeout:g} s") from None
        raise Unreachable(scrub(f"{shown}: {_reason(reason)}", secrets)) from None
    except OSError as exc:  # a reset mid-answer
        raise Unreachable(scrub(f"{shown}: {_reason(exc)}", secrets)) from None
    except ValueError:  # a malformed URL or header (its text would repeat them)
        raise Unreachable(f"{shown}: a malformed URL or header") from None
    return Response(status, raw, answer_headers, (time.perf_counter() - started) * 1000)


def _reason(reason: object) -> str:
    """An error's reason without the URL some exceptions repeat."""
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return type(reason).__name__ if not str(reason) else str(reason)[:200]
