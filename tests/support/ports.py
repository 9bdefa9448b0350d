"""Loopback ports for the servers the tests start, and for gateways that must not answer."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback port that was free a moment ago (the OS picks it, so parallel runs differ)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused at once."""
    return free_port()


def closed_url() -> str:
    """A gateway URL on a closed loopback port."""
    return f"ws://127.0.0.1:{closed_port()}/"


def free_port_block(span: int = 200) -> int:
    """A port P with P and P+150 (the stub model) free, spaced away from other gateways."""
    for _ in range(200):
        port = free_port()
        if port + span > 65000:
            continue
        try:
            for candidate in (port, port + 150):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free loopback port block found")
