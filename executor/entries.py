"""An allowlist entry and its argument checks (argv only, never a shell)."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field

from django.conf import settings

# The design's forbidden patterns: a second line only (the sandbox is the guard that matters).
FORBIDDEN = ("rm -rf", "sudo", "chmod 777", "eval", "exec", "__import__")


class Refused(Exception):
    """The executor will not run this (unknown or disabled entry, bad argument, no sandbox)."""


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int = 60
    memory_bytes: int = 1024 * 1024 * 1024
    file_bytes: int = 64 * 1024 * 1024
    processes: int = 256
    open_files: int = 256


@dataclass(frozen=True)
class Entry:
    name: str
    argv: list[str]  # "{args}" is replaced by the checked arguments
    arg_pattern: str = r"[A-Za-z0-9_./=-]+"
    max_args: int = 16
    network: bool = False
    timeout: float = 60.0
    limits: Limits = field(default_factory=Limits)
    output_cap: int = 256 * 1024
    description: str = ""
    ro_binds: tuple[str, ...] = ()  # more read-only paths inside the sandbox (an interpreter's prefix)
    env: tuple[tuple[str, str], ...] = ()  # added to the scrubbed environment (fixed at deploy, like argv)

    def build(self, args: list[str]) -> list[str]:
        """The argv for ``args``; :class:`Refused` naming the first bad argument."""
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise Refused(f"{self.name}: args must be a list of strings")
        if len(args) > self.max_args:
            raise Refused(f"{self.name}: at most {self.max_args} argument(s), got {len(args)}")
        pattern = re.compile(self.arg_pattern)
        for arg in args:
            if not pattern.fullmatch(arg) or ".." in arg.split("/") or arg.startswith("/"):
                raise Refused(f"{self.name}: argument {arg!r} is not allowed")
        argv: list[str] = []
        for part in self.argv:
            argv.extend(args) if part == "{args}" else argv.append(part)
        joined = " ".join(argv)
        for bad in FORBIDDEN:
            if bad in joined:
                raise Refused(f"{self.name}: forbidden pattern {bad!r} in the command")
        return argv


def entries() -> dict[str, Entry]:
    module = importlib.import_module(settings.AGENTFLOW_EXECUTOR_ALLOWLIST)
    return {entry.name: entry for entry in module.ENTRIES}
