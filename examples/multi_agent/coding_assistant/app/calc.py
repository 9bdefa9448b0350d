"""Small statistics helpers: the coding assistant example's sample app (it has one bug)."""

from __future__ import annotations


def average(values: list[float]) -> float:
    """The arithmetic mean; 0.0 for no values."""
    if not values:
        return 0.0
    return sum(values) / len(values)


def median(values: list[float]) -> float:
    """The middle value; for an even count, the mean of the two middle values."""
    if not values:
        raise ValueError("median of no values")
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle] + ordered[middle + 1]) / 2
