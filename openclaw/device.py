"""Ed25519 device identity for gateways that require pairing (non-loopback).

The gateway identifies a device by the SHA-256 of its raw public key and checks a signature
over the challenge nonce (PROTOCOL.md §2.2, "Device proof"). The key lives in a file with
mode 600, one per gateway, so a paired device stays paired across restarts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def proof_payload(
    *,
    device_id: str,
    client_id: str,
    client_mode: str,
    role: str,
    scopes: list[str] | tuple[str, ...],
    signed_at: int,
    token: str,
    nonce: str,
    platform: str,
    device_family: str = "",
) -> str:
    """The v3 string the device signs."""
    return "|".join(
        [
            "v3",
            device_id,
            client_id,
            client_mode,
            role,
            ",".join(scopes),
            str(signed_at),
            token,
            nonce,
            platform.lower(),
            device_family.lower(),
        ]
    )


@dataclass
class DeviceIdentity:
    private_key: Ed25519PrivateKey
    path: Path | None = None
    device_token: str | None = None

    @property
    def public_key_raw(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def device_id(self) -> str:
        return hashlib.sha256(self.public_key_raw).hexdigest()

    @property
    def public_key(self) -> str:
        return b64url(self.public_key_raw)

    def sign(self, payload: str) -> str:
        return b64url(self.private_key.sign(payload.encode("utf-8")))

    def proof(self, *, nonce: str, signed_at: int, **fields: Any) -> dict[str, object]:
        # ``fields`` are proof_payload's other keyword arguments, checked by name when it is called.
        payload = proof_payload(device_id=self.device_id, nonce=nonce, signed_at=signed_at, **fields)
        return {
            "id": self.device_id,
            "publicKey": self.public_key,
            "signature": self.sign(payload),
            "signedAt": signed_at,
            "nonce": nonce,
        }

    @classmethod
    def generate(cls) -> DeviceIdentity:
        return cls(private_key=Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> DeviceIdentity:
        """Load the identity at ``path``, creating it (mode 600) on first use."""
        if path.exists():
            return cls._load(path)
        # Several processes (web, workers, listener) may get here at once: write a complete file
        # aside and hard-link it into place, so exactly one identity wins and everyone loads it.
        identity = cls.generate()
        identity.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        aside = path.with_name(f"{path.name}.{os.getpid()}.{id(identity)}.new")
        identity._write(aside)
        try:
            os.link(aside, path)
        except FileExistsError:
            return cls._load(path)
        finally:
            aside.unlink(missing_ok=True)
        return identity

    @classmethod
    def _load(cls, path: Path) -> DeviceIdentity:
        data = json.loads(path.read_text())
        key = Ed25519PrivateKey.from_private_bytes(b64url_decode(data["privateKey"]))
        return cls(private_key=key, path=path, device_token=data.get("deviceToken"))

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        self._write(tmp)
        os.replace(tmp, self.path)

    def _write(self, target: Path) -> None:
        raw = self.private_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        data = {"deviceId": self.device_id, "privateKey": b64url(raw), "deviceToken": self.device_token}
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)

    def remember_device_token(self, token: str | None) -> None:
        if token and token != self.device_token:
            self.device_token = token
            self.save()


def verify(public_key_b64url: str, payload: str, signature_b64url: str) -> bool:
    """Check a device proof signature (used by tests against captured frames)."""
    key = Ed25519PublicKey.from_public_bytes(b64url_decode(public_key_b64url))
    try:
        key.verify(b64url_decode(signature_b64url), payload.encode("utf-8"))
    except Exception:
        return False
    return True
