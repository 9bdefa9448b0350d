"""Signals defined by the engine for the apps above it (ARCHITECTURE.md rule 6)."""

from __future__ import annotations

from django.dispatch import Signal

# Sent on commit when a run reaches a final state: sender=Run, run=<Run>.
run_finished = Signal()
