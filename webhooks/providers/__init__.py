"""The providers, one module each of the same shape (see :mod:`.base`)."""

from __future__ import annotations

from . import generic, github, slack, standard, stripe
from .base import Answer, Incoming, Malformed, Provider, Rejected, Verified

PROVIDERS: dict[str, Provider] = {
    module.PROVIDER.key: module.PROVIDER for module in (github, slack, stripe, standard, generic)
}
CHOICES = [(p.key, p.label) for p in PROVIDERS.values()]

__all__ = ["CHOICES", "PROVIDERS", "Answer", "Incoming", "Malformed", "Provider", "Rejected", "Verified"]
