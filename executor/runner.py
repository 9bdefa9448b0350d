"""Run one allowlisted entry: bubblewrap sandbox, prlimit limits, a process-group timeout, audit.

The only place in AgentFlow a process starts for a job. argv only, never a shell.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from scheduler import audit

from .entries import Entry, Refused, entries
from .models import DisabledEntry, Execution

log = logging.getLogger(__name__)

# The work directory inside the sandbox (not /work: a checkout there would be hidden).
SANDBOX_WORK = "/sandbox/work"
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass
class Result:
    execution: Execution
    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool
    killed: bool


@functools.lru_cache(maxsize=1)
def sandbox_problem() -> str:
    """ "" when bubblewrap works here, else why not (cached: namespaces do not come and go)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed: run bin/ensure-bwrap"
    try:
        done = subprocess.run(
            [bwrap, "--ro-bind", "/", "/", "--unshare-all", "true"], capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap failed to start: {exc}"
    if done.returncode != 0:
        return f"bwrap cannot create namespaces here: {done.stderr.decode(errors='replace').strip()[:200]}"
    return ""


def mode() -> str:
    """ "bwrap" or "none"; :class:`Refused` when the executor may not run at all."""
    if not settings.AGENTFLOW_EXECUTOR_ENABLED:
        raise Refused("the executor is off (AGENTFLOW_EXECUTOR_ENABLED)")
    wanted = settings.AGENTFLOW_EXECUTOR_SANDBOX
    if wanted == "none":
        return "none"
    if wanted != "bwrap":
        raise Refused(f"AGENTFLOW_EXECUTOR_SANDBOX must be bwrap or none, not {wanted!r}")
    problem = sandbox_problem()
    if problem:
        raise Refused(f"{problem}; set AGENTFLOW_EXECUTOR_SANDBOX=none to run unsandboxed")
    return "bwrap"


def _prlimit(entry: Entry) -> list[str]:
    lim = entry.limits
    return [
        shutil.which("prlimit") or "prlimit",
        f"--cpu={lim.cpu_seconds}",
        f"--as={lim.memory_bytes}",
        f"--fsize={lim.file_bytes}",
        f"--nproc={lim.processes}",
        f"--nofile={lim.open_files}",
        "--",
    ]


def _bwrap(entry: Entry, work: Path, home: Path) -> list[str]:
    argv = [shutil.which("bwrap") or "bwrap", "--unshare-all", "--die-with-parent", "--new-session"]
    if entry.network:
        argv.append("--share-net")
    for path in ("/usr", "/bin", "/lib", "/lib64", "/sbin", "/etc"):
        if os.path.exists(path):
            argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for path in entry.ro_binds:  # after the private /tmp: a checkout (and its venv) may live under /tmp
        if os.path.exists(path):
            argv += ["--ro-bind", path, path]
    argv += ["--bind", str(work), SANDBOX_WORK, "--bind", str(home), "/home/sandbox", "--chdir", SANDBOX_WORK]
    return argv + ["--"]


def _env(home: str, entry: Entry) -> dict[str, str]:
    return {**dict(entry.env), "PATH": SAFE_PATH, "HOME": home, "LANG": "C.UTF-8", "TMPDIR": "/tmp"}


def run(
    name: str,
    args: list[str] | None = None,
    *,
    asked_by: str = "",
    run_id: int | None = None,
    work_dir: Path | None = None,
    files: Mapping[str, str] | None = None,
) -> Result:
    """Run the entry ``name`` with ``args``; every call (refused ones too) leaves an audit row."""
    args = list(args or [])
    actor = audit.Actor.system(asked_by or "executor", source="executor")
    target = audit.Target("command", name, f"{name} {' '.join(args)}"[:300])
    try:
        sandbox = mode()
        entry = entries().get(name)
        if entry is None:
            raise Refused(f"unknown command {name!r}")
        if DisabledEntry.objects.filter(name=name).exists():
            raise Refused(f"command {name!r} is disabled by the admin")
        argv = entry.build(args)
    except Refused as exc:
        audit.record("executor.run", actor, target, result=audit.Result.REFUSED, message=str(exc))
        raise
    execution = Execution.objects.create(
        command=name,
        args=args,
        asked_by=asked_by[:200],
        run_id=run_id,
        sandbox=sandbox,
        running=True,
        host=socket.gethostname()[:255],
    )
    exec_root = Path(settings.DATA_DIR) / "executor"
    exec_root.mkdir(mode=0o700, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="exec-", dir=exec_root))
    work = work_dir or base / "work"
    home = base / "home"
    work.mkdir(parents=True, exist_ok=True)
    home.mkdir()
    for relative, content in (files or {}).items():  # checked by check_files: relative, no ".."
        placed = work / relative
        placed.parent.mkdir(parents=True, exist_ok=True)
        placed.write_text(content)
    if sandbox == "bwrap":
        full = _bwrap(entry, work, home) + _prlimit(entry) + argv
        env = _env("/home/sandbox", entry)
    else:
        log.warning("executor: running %s UNSANDBOXED (AGENTFLOW_EXECUTOR_SANDBOX=none)", name)
        full = _prlimit(entry) + argv
        env = _env(str(home), entry)
    started = time.monotonic()
    timed_out = False
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            full, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
            cwd=str(work), start_new_session=True, close_fds=True,
        )  # fmt: skip
        Execution.objects.filter(pk=execution.pk).update(pgid=proc.pid)
        timed_out = _wait(proc, execution.pk, entry.timeout)
        _kill_group(proc.pid)  # grandchildren left behind die too
        proc.wait()
        sizes = out.tell(), err.tell()
        out.seek(0)
        err.seek(0)
        stdout = out.read(entry.output_cap).decode(errors="replace")
        stderr = err.read(entry.output_cap).decode(errors="replace")
    shutil.rmtree(base, ignore_errors=True)
    code = proc.returncode
    killed = code is not None and code < 0
    execution.refresh_from_db(fields=["killed"])
    execution.duration_ms = (time.monotonic() - started) * 1000
    execution.exit_code, execution.output_bytes = code, sum(sizes)
    execution.killed, execution.timed_out = killed or execution.killed, timed_out
    execution.running, execution.pgid = False, None
    execution.save()
    audit.record(
        "executor.run",
        actor,
        target,
        result=audit.Result.ERROR if (code or timed_out) else audit.Result.OK,
        message=(
            f"execution {execution.pk}: exit {code}, {execution.duration_ms:.0f} ms, "
            f"{execution.output_bytes} bytes{', timed out' if timed_out else ''}"
            f"{', killed' if killed else ''}, sandbox {sandbox}"
        ),
    )
    return Result(execution, code, stdout, stderr, timed_out, killed or execution.killed)


MAX_FILES = 500
MAX_FILES_BYTES = 4 * 1024 * 1024


def check_files(files: object) -> dict[str, str]:
    """Files to put into the work directory before the command runs: ``{relative path: text}``;
    :class:`Refused` for absolute paths, ``..``, too many or too large."""
    if not isinstance(files, Mapping):
        raise Refused("files must be a map of relative paths to text")
    if len(files) > MAX_FILES:
        raise Refused(f"at most {MAX_FILES} files, got {len(files)}")
    total = 0
    cleaned: dict[str, str] = {}
    for path, content in files.items():
        parts = Path(str(path)).parts
        if not isinstance(path, str) or not path or path.startswith("/") or ".." in parts or "\\" in path:
            raise Refused(f"file path {path!r} must be relative, without ..")
        if not isinstance(content, str):
            raise Refused(f"file {path!r}: the content must be text")
        total += len(content.encode())
        cleaned[path] = content
    if total > MAX_FILES_BYTES:
        raise Refused(f"files: {total} bytes, over the {MAX_FILES_BYTES}-byte cap")
    return cleaned


KILL_POLL_SECONDS = 0.5


def _wait(proc: subprocess.Popen[bytes], execution_id: int, timeout: float) -> bool:
    """Wait for the command; True when its timeout passed. Every ``KILL_POLL_SECONDS`` it reads
    its row's ``killed`` flag, which ``kill_live`` on any host sets: so an emergency stop engaged
    on the web host kills a command running on a worker host too."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        try:
            proc.wait(timeout=min(KILL_POLL_SECONDS, left))
            return False
        except subprocess.TimeoutExpired:
            pass
        if Execution.objects.filter(pk=execution_id, killed=True).exists():
            return False


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def kill_live(reason: str) -> int:
    """Kill every live execution (the emergency stop); how many.

    Each live row is marked ``killed``: the runner waiting on it, on whichever host, sees the
    flag within ``KILL_POLL_SECONDS`` and kills its process group; this host's groups are killed
    here at once. Only rows started within the longest timeout (and a minute): a row left
    ``running`` by a crashed worker must not name a pgid the kernel has since reused."""
    longest = max((entry.timeout for entry in entries().values()), default=60.0)
    since = timezone.now() - timedelta(seconds=longest + 60)
    count = 0
    here = socket.gethostname()[:255]
    live = Execution.objects.filter(running=True, pgid__isnull=False, started_at__gte=since)
    for execution in live:
        Execution.objects.filter(pk=execution.pk).update(killed=True)
        if execution.host == here:
            _kill_group(execution.pgid or 0)
        count += 1
    if count:
        log.warning("executor: killed %d live execution(s): %s", count, reason)
    return count
