from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from . import broadcast
from .models import Gateway

CLOSE_UNAUTHENTICATED = 4401


class DashboardConsumer(AsyncJsonWebsocketConsumer):
    """One socket per open page: the gateway groups it watches, pushed as small JSON."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            # Accept first so the browser sees an explicit close code rather than a bare 403.
            await self.accept()
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.groups_joined: list[str] = [broadcast.gateway_group(pk) for pk in await self._gateway_ids()]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        # The page sends nothing yet; ignore rather than fail on unknown input.
        return

    async def gateway_status(self, event: dict[str, Any]) -> None:
        await self.send_json(
            {"type": event["kind"], "gateway_id": event["gateway_id"], "status": event["status"]}
        )

    @database_sync_to_async
    def _gateway_ids(self) -> list[int]:
        return list(Gateway.objects.enabled().values_list("pk", flat=True))
