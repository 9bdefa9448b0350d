"""agentflow.processes: the Procfile as a supervisord configuration, and a real supervisord
that restarts a killed program while the others keep running, prints each program's output with
its name, and stops everything it started on SIGTERM."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from agentflow import processes
from agentflow.processes import Program, read_procfile, render
from tests.support.gateway import wait_for

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def test_it_reads_a_procfile():
    text = "# the stack\nweb: daphne -p ${PORT:-8000} app\n\nworker: celery worker\n"
    assert read_procfile(text) == [
        Program("web", "daphne -p ${PORT:-8000} app"),
        Program("worker", "celery worker"),
    ]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("web daphne", "line 1: expected 'name: command'"),
        ("web:", "line 1: expected 'name: command'"),
        ("Web Server: x", "line 1: expected 'name: command'"),
        ("a: x\na: y", "line 2: 'a' is listed twice"),
    ],
)
def test_a_bad_procfile_line_is_refused_with_its_number(text, error):
    with pytest.raises(ValueError, match=error):
        read_procfile(text)


def test_the_real_procfile_becomes_one_supervised_program_each(tmp_path):
    programs = read_procfile((ROOT / "Procfile").read_text())
    assert [p.name for p in programs] == ["web", "worker", "beat", "listener", "watcher"]
    conf = render(programs, directory=ROOT, logs=tmp_path, run=tmp_path)
    for name in ("web", "worker", "beat", "listener", "watcher"):
        section = conf.split(f"[program:{name}]\n", 1)[1].split("\n\n", 1)[0]
        assert "autorestart=true" in section
        assert "stopasgroup=true" in section and "killasgroup=true" in section
        assert f"stdout_logfile={tmp_path}/{name}.log" in section
    assert "[eventlistener:echo]" in conf
    assert "chmod=0700" in conf


def test_a_percent_sign_survives_supervisors_interpolation(tmp_path):
    conf = render([Program("p", "date +%s")], directory=tmp_path, logs=tmp_path, run=tmp_path)
    assert "command=/bin/bash -c 'exec date +%%s'" in conf


def test_the_command_line_writes_the_config_and_refuses_a_bad_procfile(tmp_path, capsys):
    (tmp_path / "Procfile").write_text("one: sleep 5\n")
    assert processes.main(["conf", str(tmp_path / "Procfile"), str(tmp_path / "s.conf")]) == 0
    assert "[program:one]" in (tmp_path / "s.conf").read_text()
    assert (tmp_path / "log").is_dir()
    (tmp_path / "Procfile").write_text("one sleep 5\n")
    assert processes.main(["conf", str(tmp_path / "Procfile"), str(tmp_path / "t.conf")]) == 2
    assert "expected 'name: command'" in capsys.readouterr().err
    assert not (tmp_path / "t.conf").exists()


# --- a real supervisord ---------------------------------------------------------------------------


def ticker(word: str) -> str:
    loop = (  # one line: a supervisord command is one line of its ini file
        "import itertools, time; "
        f"[print('{word}', i, flush=True) or time.sleep(0.5) for i in itertools.count()]"
    )
    return f"{sys.executable} -c {shlex.quote(loop)}"


@pytest.fixture
def stack():
    """supervisord with two programs, in a short /tmp folder (a unix socket path is limited to
    about 100 bytes). Yields (ctl, output, process); stops it at the end."""
    folder = Path(tempfile.mkdtemp(prefix="sv-", dir="/tmp"))
    conf = folder / "supervisord.conf"
    programs = [Program("alpha", ticker("alpha-tick")), Program("beta", ticker("beta-tick"))]
    conf.write_text(render(programs, directory=ROOT, logs=folder / "log", run=folder))
    (folder / "log").mkdir()
    out = (folder / "out.txt").open("ab")
    proc = subprocess.Popen(
        [str(BIN / "supervisord"), "-c", str(conf)],
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def ctl(*args: str) -> str:
        done = subprocess.run(
            [str(BIN / "supervisorctl"), "-c", str(conf), *args], capture_output=True, text=True, timeout=20
        )
        return done.stdout.strip()

    def pid(name: str) -> int:
        value = ctl("pid", name)
        return int(value) if value.isdigit() and value != "0" else 0

    def running() -> bool:
        return pid("alpha") > 0 and pid("beta") > 0 and "RUNNING" in ctl("status", "alpha")

    try:
        wait_for(running, timeout=20, interval=0.3, what="supervisord and its two programs")
        yield ctl, pid, folder / "out.txt", proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        out.close()
        shutil.rmtree(folder, ignore_errors=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_killed_program_is_back_within_10_s_and_the_other_keeps_running(stack):
    ctl, pid, output, supervisord = stack
    alpha, beta = pid("alpha"), pid("beta")

    os.kill(alpha, signal.SIGKILL)
    killed = time.monotonic()
    new_alpha = wait_for(
        lambda: (p := pid("alpha")) not in (0, alpha) and "RUNNING" in ctl("status", "alpha") and p,
        timeout=10,
        interval=0.2,
        what="alpha restarted",
    )
    assert time.monotonic() - killed < 10
    assert new_alpha != alpha and alive(new_alpha) and not alive(alpha)
    assert pid("beta") == beta  # untouched
    assert supervisord.poll() is None

    # Each program's lines reach the terminal with its name, and the restart is logged.
    wait_for(lambda: "alpha-tick 0" in output.read_text().split("exited: alpha")[-1], timeout=10)
    text = output.read_text()
    assert "alpha    | alpha-tick 0" in text and "beta     | beta-tick" in text
    assert "exited: alpha (terminated by SIGKILL; not expected)" in text


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])  # Ctrl-C, or a service manager
def test_a_stop_signal_stops_every_program_it_started(stack, signum):
    _ctl, pid, output, supervisord = stack
    children = [pid("alpha"), pid("beta")]
    os.kill(supervisord.pid, signum)
    supervisord.wait(timeout=20)
    assert not any(alive(p) for p in children)
    assert "stopped: alpha" in output.read_text()
