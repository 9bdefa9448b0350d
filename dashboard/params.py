"""Parsing of ids and integers from URLs and query strings, for every page and API view.

``str.isdigit()`` and ``int()`` accept far more than a database does: ``"²".isdigit()`` is true
and ``int("٣")`` is 3, and nothing stops ``9223372036854775808`` (2^63), which SQLite and
PostgreSQL refuse with an error. So this module accepts ASCII digits only, bounded to the
database's signed 64-bit range, and says which parameter was wrong. Views raise
:class:`BadParam`; ``dashboard.middleware`` turns it into a 400 (JSON under /api/, a page
elsewhere) naming the parameter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from django.core.exceptions import BadRequest

BIGINT_MAX = 2**63 - 1  # the largest id a BigAutoField (or a SQLite INTEGER) can hold
_ASCII_DIGITS = re.compile(r"[0-9]{1,19}")  # 19 digits reach past BIGINT_MAX; more never fit


class BadParam(BadRequest):
    """A query or form parameter that is not what the view accepts; the message names it."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"'{name}' {message}")
        self.name = name
        self.message = f"'{name}' {message}"


def parse_int(raw: str, name: str, *, minimum: int = 0, maximum: int = BIGINT_MAX) -> int:
    """``raw`` as an int in [minimum, maximum]; ASCII digits only (an optional leading ``-``
    where ``minimum`` is negative). Raises :class:`BadParam` otherwise."""
    text = raw.strip()
    negative = text.startswith("-") and minimum < 0
    digits = text[1:] if negative else text
    if text.startswith("-") and not negative and _ASCII_DIGITS.fullmatch(text[1:]):
        raise BadParam(name, "must not be negative")
    if not _ASCII_DIGITS.fullmatch(digits):
        shown = raw if len(raw) <= 40 else raw[:40] + "…"
        raise BadParam(name, f"must be an integer, got {shown!r}")
    value = -int(digits) if negative else int(digits)
    if value < minimum:
        raise BadParam(name, f"must be at least {minimum}")
    if value > maximum:
        raise BadParam(name, f"must be at most {maximum}")
    return value


def get_int(
    params: Mapping[str, str], name: str, default: int, *, minimum: int = 0, maximum: int = BIGINT_MAX
) -> int:
    """The integer query parameter ``name``, or ``default`` when it is absent or empty."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    return parse_int(raw, name, minimum=minimum, maximum=maximum)


def get_id(params: Mapping[str, str], name: str) -> int | None:
    """A database id (1 … 2^63-1) from the query string, or None when absent or empty."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    return parse_int(raw, name, minimum=1)


def as_id(raw: str) -> int | None:
    """``raw`` as a database id if it is one (for a parameter that is a name *or* an id)."""
    if not _ASCII_DIGITS.fullmatch(raw):
        return None
    value = int(raw)
    return value if 1 <= value <= BIGINT_MAX else None


class IdConverter:
    """``<id:name>`` in a URL: like ``<int:...>`` but only ids a database can hold, so
    ``/gateways/9223372036854775808/`` is a 404 instead of an overflow in the query (Django
    treats a ``ValueError`` from ``to_python`` as "this pattern does not match")."""

    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > BIGINT_MAX:
            raise ValueError(f"{value} is past the largest id")
        return number

    def to_url(self, value: int) -> str:
        return str(int(value))
