"""Secrets at rest: gateway tokens (and later webhook secrets) encrypted with Fernet keys.

``cryptography``'s :class:`~cryptography.fernet.MultiFernet` does the work (AES-128-CBC with an
HMAC-SHA256, a timestamp, a version byte): no hand-made cipher. The keys come from
``AGENTFLOW_ENCRYPTION_KEYS`` (``settings.ENCRYPTION_KEYS``), comma-separated: the **first**
encrypts, **every** key decrypts, so rotating is "put the new key first, run
``manage.py rotate_encryption_key``, then drop the old key".

A stored value is ``fernet:`` followed by the Fernet token. A value without the prefix is a
plain value written before encryption existed (fleet migration 0002 encrypts those); it is read
as it is, and the next save or rotation encrypts it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Iterable, Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

log = logging.getLogger("agentflow.crypto")

PREFIX = "fernet:"
_cache: dict[tuple[str, ...], MultiFernet] = {}


class DecryptionError(Exception):
    """A stored secret none of the configured keys opens (a key was dropped too early)."""


def generate_key() -> str:
    """A new random key, in the form AGENTFLOW_ENCRYPTION_KEYS takes."""
    return Fernet.generate_key().decode("ascii")


def derive_key(secret: str) -> str:
    """The development/test default: a stable key derived from SECRET_KEY (never used in production)."""
    digest = hashlib.sha256(b"agentflow.encryption-key.v1:" + secret.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")


def check_keys(keys: Iterable[str]) -> list[str]:
    """The keys, each checked to be a Fernet key; ValueError names the bad one by position."""
    out = []
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise ValueError(
                f"key #{position} is not a Fernet key (32 bytes, url-safe base64, 44 characters)"
            ) from None
        out.append(key)
    return out


def _fernet(keys: Sequence[str] | None = None) -> MultiFernet:
    if keys is None:
        from django.conf import settings

        keys = settings.ENCRYPTION_KEYS
    cache_key = tuple(keys)
    if not cache_key:
        raise DecryptionError("no encryption keys are configured (AGENTFLOW_ENCRYPTION_KEYS)")
    fernet = _cache.get(cache_key)
    if fernet is None:
        fernet = _cache[cache_key] = MultiFernet([Fernet(k.encode("ascii")) for k in cache_key])
    return fernet


def is_encrypted(stored: str | None) -> bool:
    return bool(stored) and str(stored).startswith(PREFIX)


def encrypt(plain: str, keys: Sequence[str] | None = None) -> str:
    """The stored form of ``plain``; the empty string stays empty (nothing to hide)."""
    if plain == "":
        return ""
    return PREFIX + _fernet(keys).encrypt(plain.encode("utf-8")).decode("ascii")


def decrypt(stored: str, keys: Sequence[str] | None = None) -> str:
    """The plain value of a stored one; a legacy plain value is returned as it is."""
    if not is_encrypted(stored):
        return stored
    try:
        return _fernet(keys).decrypt(stored[len(PREFIX) :].encode("ascii")).decode("utf-8")
    except InvalidToken:
        raise DecryptionError(
            "a stored secret cannot be decrypted with any key of AGENTFLOW_ENCRYPTION_KEYS "
            "(was a key removed before `manage.py rotate_encryption_key` ran?)"
        ) from None
