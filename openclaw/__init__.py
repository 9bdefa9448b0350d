"""OpenClaw gateway client (protocol v4). No Django imports: Django code goes through
``fleet.services``."""

from __future__ import annotations

from .client import Backoff, GatewayClient, is_loopback_url
from .compat import Compatibility, assess
from .device import DeviceIdentity
from .errors import (
    AuthError,
    ConnectionLostError,
    ForbiddenError,
    GatewayError,
    GatewayTimeout,
    InvalidRequestError,
    MalformedFrameError,
    NotConnectedError,
    NotFoundError,
    PairingRequiredError,
    ProtocolMismatchError,
    UnavailableError,
)
from .frames import Event, HelloInfo
from .sync import SyncGatewayClient

__all__ = [
    "AuthError",
    "Backoff",
    "Compatibility",
    "ConnectionLostError",
    "DeviceIdentity",
    "Event",
    "ForbiddenError",
    "GatewayClient",
    "GatewayError",
    "GatewayTimeout",
    "HelloInfo",
    "InvalidRequestError",
    "MalformedFrameError",
    "NotConnectedError",
    "NotFoundError",
    "PairingRequiredError",
    "ProtocolMismatchError",
    "SyncGatewayClient",
    "UnavailableError",
    "assess",
    "is_loopback_url",
]
