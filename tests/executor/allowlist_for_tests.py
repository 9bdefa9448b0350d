"""A test allowlist: interpreters with free arguments, so the sandbox is the only guard left."""

from __future__ import annotations

from executor.entries import Entry, Limits

ANY = r"(?s).*"
BIND_UNDER_TMP = "/tmp/agentflow-sandbox-bind-test"  # a checkout or venv may live under /tmp
ENTRIES = [
    Entry("true", ["true"], max_args=0),
    Entry("sh", ["sh", "-c", "{args}"], arg_pattern=ANY, max_args=1, timeout=5),
    Entry("bash", ["bash", "-c", "{args}"], arg_pattern=ANY, max_args=1, timeout=5),
    Entry("python", ["python3", "-c", "{args}"], arg_pattern=ANY, max_args=1, timeout=5),
    Entry("long", ["sh", "-c", "{args}"], arg_pattern=ANY, max_args=1, timeout=30),
    Entry("sleepy", ["sh", "-c", "{args}"], arg_pattern=ANY, max_args=1, timeout=1),
    Entry(
        "small",
        ["python3", "-c", "{args}"],
        arg_pattern=ANY,
        max_args=1,
        timeout=10,
        limits=Limits(cpu_seconds=1, file_bytes=1024 * 1024),
    ),
    Entry(
        "tight",
        ["python3", "-c", "{args}"],
        arg_pattern=ANY,
        max_args=1,
        timeout=10,
        limits=Limits(memory_bytes=256 * 1024 * 1024, open_files=32),
    ),
    Entry(
        "bound", ["sh", "-c", "{args}"], arg_pattern=ANY, max_args=1, timeout=5, ro_binds=(BIND_UNDER_TMP,)
    ),
]
