"""Issue 8 (item 6): `kill -9` of the Celery worker's main process under `make run`'s supervisord.

The same supervisord configuration `bin/run` writes (agentflow/processes.py from the Procfile),
with the Procfile's web (Daphne) and worker (Celery, prefork) on a bench database and Redis
prefix and a free loopback port. Each round kills the worker's main process with SIGKILL and
measures the seconds until supervisord has it RUNNING again under a new pid and until the new
worker logs ``ready``, while a thread polls the web's /healthz every 100 ms. Reported: the times,
the failed /healthz polls (the web must keep answering) and the old worker's pool processes left
alive 5 s after the kill (orphans)."""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench._common import ROOT, free_port, http_get, server_env, setup

ROUNDS = 3
BACK_WITHIN_S = 10.0
BIN = Path(sys.executable).parent


def _ctl(conf: Path, *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "supervisorctl"), "-c", str(conf), *args], capture_output=True, text=True, timeout=20
    )
    return done.stdout.strip()


def _pid(conf: Path, name: str) -> int:
    value = _ctl(conf, "pid", name)
    return int(value) if value.isdigit() else 0


def _group(pgid: int) -> list[int]:
    """Live processes in process group ``pgid`` (supervisord gives each program its own)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    found.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                continue
    return found


def _wait(predicate, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def run() -> dict:
    setup("supervisor")
    from django.core.management import call_command

    from agentflow.processes import read_procfile, render

    call_command("collectstatic", interactive=False, verbosity=0)
    port = free_port()
    programs = [p for p in read_procfile((ROOT / "Procfile").read_text()) if p.name in ("web", "worker")]
    folder = Path(tempfile.mkdtemp(prefix="afsv-", dir="/tmp"))  # a unix socket path is short
    conf = folder / "supervisord.conf"
    conf.write_text(render(programs, directory=ROOT, logs=folder / "log", run=folder, echo=False))
    (folder / "log").mkdir()
    env = server_env(AGENTFLOW_HOST="127.0.0.1", AGENTFLOW_PORT=str(port), LOG_LEVEL="INFO")
    out = (folder / "supervisord.out").open("wb")
    sup = subprocess.Popen(
        [str(BIN / "supervisord"), "-c", str(conf)],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    worker_log = folder / "log" / "worker.log"
    health = f"http://127.0.0.1:{port}/healthz"
    polls = {"ok": 0, "failed": 0}
    stop_polling = threading.Event()

    def poll() -> None:
        while not stop_polling.wait(0.1):
            polls["ok" if healthy() else "failed"] += 1

    def healthy() -> bool:
        try:
            return http_get(health, timeout=2)[0] == 200
        except OSError:
            return False

    def ready_count() -> int:
        return worker_log.read_text(errors="replace").count(" ready.") if worker_log.exists() else 0

    back_running, back_ready, orphans = [], [], []
    try:
        if not _wait(healthy, 60, 0.5):
            raise RuntimeError(f"web did not answer {health}; see {folder}/log")
        if not _wait(lambda: ready_count() >= 1, 60, 0.2):
            raise RuntimeError(f"the worker never logged ready; see {worker_log}")
        web_pid = _pid(conf, "web")
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        for _round in range(ROUNDS):
            old = _pid(conf, "worker")
            readies = ready_count()
            os.kill(old, signal.SIGKILL)
            killed = time.monotonic()
            if not _wait(lambda old=old: _pid(conf, "worker") not in (0, old), 30):
                raise RuntimeError("supervisord did not restart the worker")
            back_running.append(time.monotonic() - killed)
            if not _wait(lambda readies=readies: ready_count() > readies, 60, 0.1):
                raise RuntimeError("the restarted worker never logged ready")
            back_ready.append(time.monotonic() - killed)
            time.sleep(max(0.0, 5 - (time.monotonic() - killed)))
            orphans.append(len(_group(old)))
            time.sleep(3)  # past supervisord's startsecs before the next kill
        stop_polling.set()
        poller.join()
        web_kept = _pid(conf, "web") == web_pid
    finally:
        stop_polling.set()
        if sup.poll() is None:
            os.killpg(sup.pid, signal.SIGTERM)
            try:
                sup.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(sup.pid, signal.SIGKILL)
        out.close()
    shutil.rmtree(folder, ignore_errors=True)
    worst = max(back_ready)
    return {
        "rounds": ROUNDS,
        "worker_running_again_s": [round(v, 2) for v in back_running],
        "worker_ready_again_s": [round(v, 2) for v in back_ready],
        "worker_ready_again_median_s": round(statistics.median(back_ready), 2),
        "healthz_polls_ok": polls["ok"],
        "healthz_polls_failed": polls["failed"],
        "web_pid_unchanged": web_kept,
        "old_worker_processes_left_after_5s": orphans,
        "targets": [
            {
                "name": "worker back (ready) after kill -9 of its main process, worst of rounds",
                "value": f"{worst:.1f} s",
                "target": f"<= {BACK_WITHIN_S:.0f} s",
                "ok": worst <= BACK_WITHIN_S,
            },
            {
                "name": "web kept answering /healthz meanwhile (failed polls)",
                "value": polls["failed"],
                "target": "0, same web pid",
                "ok": polls["failed"] == 0 and web_kept,
            },
        ],
    }
