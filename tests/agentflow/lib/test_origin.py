"""agentflow.lib.origin: which Origin is this site's own (the handshake itself is tested through
the ASGI stack in tests/dashboard/test_consumers.py)."""

from __future__ import annotations

import pytest

from agentflow.lib.origin import origin_allowed, site_origin


def scope(host: str, scheme: str = "ws", **headers: str) -> dict:
    raw = [(b"host", host.encode())] + [
        (k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()
    ]
    return {"type": "websocket", "scheme": scheme, "headers": raw}


def test_the_site_origin_is_the_requests_scheme_and_host():
    assert site_origin(scope("127.0.0.1:8000")) == "http://127.0.0.1:8000"
    assert site_origin(scope("localhost", scheme="wss")) == "https://localhost"
    assert site_origin(scope("evil.example")) is None  # not in ALLOWED_HOSTS


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:9999",
        "http://127.0.0.1:8000.evil.example",
        "http://user@127.0.0.1:8000",
        "http://127.0.0.1:8000/path",
        "http://127.0.0.1:99999",
        "ftp://127.0.0.1:8000",
        "null",
        "",
    ],
)
def test_anything_but_the_exact_origin_is_refused(origin):
    assert not origin_allowed(origin, scope("127.0.0.1:8000"))


def test_the_forwarded_host_counts_only_when_the_project_says_so(settings):
    proxied = scope("127.0.0.1:8000", x_forwarded_host="localhost:8443")
    assert not origin_allowed("http://localhost:8443", proxied)
    settings.USE_X_FORWARDED_HOST = True
    assert origin_allowed("http://localhost:8443", proxied)
