"""The issue's attack in a real browser: a page served from another port of the same host opens
/ws/dashboard/ (Chromium sends the signed-in user's cookie along) and is refused; the site's own
page is accepted. No gateway needed."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.browser import login

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.usefixtures("redis_prefix")]

OPEN_SOCKET = """url => new Promise(resolve => {
    const ws = new WebSocket(url);
    ws.onopen = () => ws.onclose = e => resolve("closed " + e.code);
    ws.onmessage = () => {};
    setTimeout(() => resolve(ws.readyState === 1 ? "open" : "state " + ws.readyState), 3000);
    ws.onerror = () => resolve("refused");
})"""


@pytest.fixture
def other_port_site():
    """A plain page served from another port of the same host (what the issue's attacker ran)."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<!doctype html><title>another site</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_page_on_another_port_cannot_open_the_dashboard_socket(
    live_server_url, operator, page, other_port_site
):
    login(page, live_server_url, "operator", "operator-pass")
    socket_url = live_server_url.replace("http://", "ws://") + "/ws/dashboard/"
    assert page.evaluate(OPEN_SOCKET, socket_url) == "open"  # the site itself, signed in

    page.goto(f"{other_port_site}/")  # same host, another port
    assert page.evaluate(OPEN_SOCKET, socket_url) == "refused"
