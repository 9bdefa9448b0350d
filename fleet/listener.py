"""The gateway listener: one persistent connection per enabled gateway.

It keeps each gateway's status current (connected / degraded / read-only / why not), re-issues
``sessions.subscribe`` after every reconnect and hands every event to :mod:`fleet.events`.
Gateways added, disabled or edited in the admin are picked up within ``refresh_interval``.
A gateway whose token is rejected is not retried until its token or URL changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async

from openclaw import AuthError, Event, GatewayClient, GatewayError, HelloInfo, ProtocolMismatchError, assess

from . import events, live
from .models import Gateway
from .services import async_client

log = logging.getLogger("agentflow.listener")


@dataclass
class Watch:
    fingerprint: str
    client: GatewayClient | None = None
    task: asyncio.Task[None] = field(init=False)  # set at once: the task is given its own watch


def fingerprint(gateway: Gateway) -> str:
    return hashlib.sha256(f"{gateway.url}\0{gateway.token}".encode()).hexdigest()


class FleetListener:
    def __init__(self, refresh_interval: float = 10.0) -> None:
        self.refresh_interval = refresh_interval
        self.watches: dict[int, Watch] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    await self.reconcile()
                except Exception:  # e.g. the database is briefly away: keep watching, retry next round
                    log.exception("listener: could not reload the gateway list")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.refresh_interval)
        finally:
            await self.stop_all()

    async def reconcile(self) -> None:
        gateways = await sync_to_async(lambda: list(Gateway.objects.enabled()))()
        wanted = {gw.pk: gw for gw in gateways}
        for pk in list(self.watches):
            gw = wanted.get(pk)
            watch = self.watches[pk]
            if gw is None or fingerprint(gw) != watch.fingerprint:
                log.info("gateway %s: configuration changed or disabled; reconnecting", pk)
                await self._stop(pk)
            elif watch.task.done():
                # Only an unexpected error ends a watch (auth failures wait for a new token).
                log.error("gateway %s: watch ended unexpectedly (%r); restarting", pk, watch.task.exception())
                await self._stop(pk)
        for pk, gw in wanted.items():
            if pk not in self.watches:
                watch = Watch(fingerprint=fingerprint(gw))
                watch.task = asyncio.create_task(self._watch(gw, watch), name=f"gateway-{pk}")
                self.watches[pk] = watch

    async def stop_all(self) -> None:
        for pk in list(self.watches):
            await self._stop(pk)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def _stop(self, pk: int) -> None:
        watch = self.watches.pop(pk)
        if watch.client is not None:
            await watch.client.close()
        watch.task.cancel()
        await asyncio.gather(watch.task, return_exceptions=True)

    async def _watch(self, gateway: Gateway, watch: Watch) -> None:
        client = async_client(gateway)
        watch.client = client

        async def on_connect(c: GatewayClient, hello: HelloInfo) -> None:
            compat = assess(hello)
            await sync_to_async(gateway.mark_connected)(hello, compat)
            await live.GATEWAY_STATUS.asend(**live.status_of(gateway))
            if "sessions.subscribe" in hello.methods:
                await c.sessions_subscribe()
            await events.on_connected(gateway.pk)

        def on_state(c: GatewayClient) -> None:
            if c.last_error is not None and c.state in ("reconnecting", "auth_failed", "incompatible"):
                task = asyncio.ensure_future(self._record_failure(gateway, c.last_error))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

        async def on_event(event: Event) -> None:
            await events.handle(gateway.pk, event)

        client.on_connect(on_connect)
        client.state_listeners.append(on_state)
        client.on("*", on_event)
        try:
            await client.run()
        except (AuthError, ProtocolMismatchError) as exc:
            await self._record_failure(gateway, exc)
            log.error(
                "gateway %s: %s [code=%s]; waiting for the admin to change its token or URL",
                gateway.name,
                exc.operator_message,
                exc.log_code,
            )
            await asyncio.Event().wait()  # until reconcile() sees a new fingerprint and cancels us

    async def _record_failure(self, gateway: Gateway, error: GatewayError) -> None:
        previous = gateway.status
        await sync_to_async(gateway.mark_failed)(error)
        if gateway.status != previous:
            await live.GATEWAY_STATUS.asend(**live.status_of(gateway))
