"""Django-side glue for the gateway client: building clients from ``Gateway`` rows and
recording what a connection attempt taught us. Celery tasks, commands and the listener call
these; none of them touch :mod:`openclaw` internals."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings

from openclaw import (
    DeviceIdentity,
    GatewayClient,
    GatewayError,
    HelloInfo,
    InvalidRequestError,
    SyncGatewayClient,
    assess,
)

from .models import Gateway

log = logging.getLogger("agentflow.gateway")


def client_options(gateway: Gateway, **overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "name": gateway.name,
        "request_timeout": settings.GATEWAY_REQUEST_TIMEOUT,
        "connect_timeout": settings.GATEWAY_CONNECT_TIMEOUT,
        "scopes": settings.GATEWAY_SCOPES,
    }
    # One device identity per gateway, shared by every AgentFlow process and kept on disk.
    # Remote gateways require it (pairing); on loopback it is auto-approved and it makes runs
    # started by one AgentFlow connection abortable from another (the gateway lets the device
    # that started a run abort it; other devices need operator.admin).
    options["device"] = DeviceIdentity.load_or_create(
        settings.GATEWAY_DEVICE_DIR / f"gateway-{gateway.pk}.json"
    )
    options.update(overrides)
    return options


def async_client(gateway: Gateway, **overrides: Any) -> GatewayClient:
    return GatewayClient(gateway.url, gateway.token or None, **client_options(gateway, **overrides))


@contextmanager
def connected(gateway: Gateway, **overrides: Any) -> Iterator[SyncGatewayClient]:
    """A connected synchronous client; the connection outcome is recorded on the gateway."""
    client = SyncGatewayClient(gateway.url, gateway.token or None, **client_options(gateway, **overrides))
    try:
        hello = _connect_with_retries(client, gateway)
        if gateway.status != Gateway.Status.CONNECTED or gateway.version != hello.server_version:
            gateway.mark_connected(hello, assess(hello))
        yield client
    finally:
        client.close()


def _connect_with_retries(client: SyncGatewayClient, gateway: Gateway, attempts: int = 3) -> HelloInfo:
    """Connect, retrying retryable failures (refused, dropped, unavailable) up to ``attempts`` times."""
    for attempt in range(1, attempts + 1):
        try:
            return client.connect()
        except GatewayError as exc:
            if not exc.retryable or attempt == attempts:
                gateway.mark_failed(exc)
                raise
            time.sleep(min(client.client.backoff.delay(attempt - 1), 2.0))
    raise AssertionError("unreachable")


def probe(gateway: Gateway, timeout: float = 5.0) -> float:
    """Connect and time one ``config.get``; record status and latency. Returns latency in ms."""
    client = SyncGatewayClient(
        gateway.url, gateway.token or None, **client_options(gateway, connect_timeout=timeout)
    )
    try:
        hello = client.connect()
        started = time.perf_counter()
        client.config_get(timeout=timeout, attempts=1)
        latency_ms = (time.perf_counter() - started) * 1000
    except GatewayError as exc:
        gateway.mark_failed(exc)
        raise
    finally:
        client.close()
    gateway.mark_connected(hello, assess(hello), latency_ms=latency_ms)
    return latency_ms


def register_gateway(name: str, url: str, token: str) -> tuple[Gateway, str]:
    """Create or update the gateway ``name`` (used by ``make run`` and ops scripts).

    Returns the gateway and what happened: "registered", "updated" or "up to date"."""
    gateway, created = Gateway.objects.get_or_create(name=name, defaults={"url": url, "token": token})
    if created:
        return gateway, "registered"
    if gateway.url != url or gateway.token != token or not gateway.enabled:
        gateway.url, gateway.token, gateway.enabled = url, token, True
        gateway.save(update_fields=["url", "token", "enabled", "updated_at"])
        return gateway, "updated"
    return gateway, "up to date"


def send_chat(gateway: Gateway, session_key: str, message: str, *, idempotency_key: str) -> dict[str, Any]:
    """``chat.send`` from the chat panel; the idempotency key makes a double submit harmless."""
    with connected(gateway) as client:
        return client.chat_send(session_key, message, idempotency_key=idempotency_key)


class AbortRefusedError(GatewayError):
    @property
    def operator_message(self) -> str:
        return (
            "The gateway refused to abort this run: only the client that started it, or a connection with "
            "operator.admin (AGENTFLOW_GATEWAY_SCOPES), may abort it."
        )


def abort_chat(gateway: Gateway, session_key: str, run_id: str | None = None) -> dict[str, Any]:
    with connected(gateway) as client:
        try:
            return client.chat_abort(session_key, run_id=run_id)
        except InvalidRequestError as exc:
            if exc.message.strip().lower() == "unauthorized":
                raise AbortRefusedError(exc.message, code=exc.code, method="chat.abort") from None
            raise
