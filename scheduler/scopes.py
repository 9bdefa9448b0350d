"""What a scope's value names in a run's columns (pauses and emergency stops).

A run records its gateway as the string the action gave it (the agent kind: the gateway's id),
while an operator names a gateway by its name. Apps above the engine register, in their
``AppConfig.ready()``, how to turn what an operator typed into every string a run may carry for it
(ARCHITECTURE.md rule 6: no import upward); without a resolver the value is taken as it is.
"""

from __future__ import annotations

from collections.abc import Callable

Resolver = Callable[[str], list[str]]

_RESOLVERS: dict[str, Resolver] = {}


def register(scope: str, resolver: Resolver) -> None:
    _RESOLVERS[scope] = resolver


def unregister(scope: str) -> None:
    _RESOLVERS.pop(scope, None)


def aliases(scope: str, value: str) -> list[str]:
    """Every string a run's ``scope`` column may hold for ``value`` (``value`` itself first)."""
    found = [value]
    resolver = _RESOLVERS.get(scope)
    if resolver is not None:
        for alias in resolver(value):
            if alias and alias not in found:
                found.append(alias)
    return found
