"""Captured gateway frames from the protocol reference (copied into tests/fixtures/frames)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "frames"


def load_frame(name: str) -> Any:
    """The captured frame ``name`` (a file under FIXTURES), parsed."""
    return json.loads((FIXTURES / name).read_text())
