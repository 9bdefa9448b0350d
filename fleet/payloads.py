"""Reading gateway payloads of unknown shape, one field at a time.

A field of the wrong type reads as empty (or as the given default), so a malformed frame degrades
one row instead of breaking a whole sync; and the result has one type, which the type checker
follows where a repeated ``x.get(k) if isinstance(x.get(k), dict) else {}`` loses it.
"""

from __future__ import annotations

from typing import Any, TypeVar

_Default = TypeVar("_Default")


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_str(value: Any, default: _Default) -> str | _Default:
    return value if isinstance(value, str) else default
