from __future__ import annotations

import base64
import os
import socket
import uuid
from pathlib import Path

import pytest

from executor import runner
from executor.entries import Refused
from executor.models import DisabledEntry, Execution
from scheduler import actions
from scheduler.models import AuditEntry

pytestmark = pytest.mark.django_db

BWRAP_PROBLEM = runner.sandbox_problem()
needs_bwrap = pytest.mark.skipif(bool(BWRAP_PROBLEM), reason=f"no working sandbox: {BWRAP_PROBLEM}")


@pytest.fixture(autouse=True)
def _executor(settings):
    settings.AGENTFLOW_EXECUTOR_ENABLED = True
    settings.AGENTFLOW_EXECUTOR_SANDBOX = "bwrap"
    settings.AGENTFLOW_EXECUTOR_ALLOWLIST = "tests.executor.allowlist_for_tests"


@pytest.fixture
def victims(tmp_path):
    """A file in a host directory (invisible inside) and one in /etc (visible, read-only inside)."""
    host = tmp_path / "victim.txt"
    host.write_text("keep")
    etc = Path("/etc") / f"agentflow-victim-{uuid.uuid4().hex}"
    try:
        etc.write_text("keep")
    except OSError:
        etc = host  # not root: /etc is not writable even outside; the host file still tests it
    yield [host, etc]
    if etc != host:
        etc.unlink(missing_ok=True)


def _payloads(paths: list[Path]) -> list[tuple[str, str]]:
    targets = " ".join(str(p) for p in paths)
    script = f"rm -rf {targets}"
    encoded = base64.b64encode(script.encode()).decode()
    parents = " ".join(str(p.parent) for p in paths)
    rmtree = "; ".join(f"shutil.rmtree({str(p.parent)!r}, ignore_errors=True)" for p in paths)
    return [
        ("sh", f"rm -r -f {targets}"),
        ("sh", f"rm  -rf {targets}"),
        ("sh", f"r''m -r -f {targets}"),
        ("bash", f"echo {encoded} | base64 -d | sh"),
        ("python", f"import shutil; {rmtree}"),
        ("sh", f"find {parents} \\( -name 'victim*' -o -name 'agentflow-victim-*' \\) -delete"),
    ]


@needs_bwrap
@pytest.mark.parametrize("index", range(6))
def test_bypasses_do_not_delete_outside_the_work_dir(victims, index):
    name, payload = _payloads(victims)[index]
    result = runner.run(name, [payload], asked_by="test")
    for victim in victims:
        assert victim.read_text() == "keep", (name, payload, result.stderr)
    assert result.execution.sandbox == "bwrap"


def test_the_substring_guard_is_a_second_line():
    with pytest.raises(Refused, match="forbidden pattern 'rm -rf'"):
        runner.run("sh", ["rm -rf /"])
    assert AuditEntry.objects.filter(action="executor.run", result="refused").exists()


@needs_bwrap
def test_the_work_dir_is_writable_and_home_private():
    result = runner.run("sh", ["echo hi > here.txt && cat here.txt && echo $HOME && env | wc -l"])
    lines = result.stdout.split()
    assert result.exit_code == 0, result.stderr
    assert lines[:2] == ["hi", "/home/sandbox"]
    assert int(lines[2]) <= 6  # a scrubbed environment (PATH HOME LANG TMPDIR, and the shell's own)


def _alive(marker: str, within: float = 3.0) -> list[int]:
    """The live (not zombie) processes whose argv has ``marker``, after up to ``within`` seconds:
    a killed pid namespace's members die asynchronously, just after its init."""
    import time

    deadline = time.monotonic() + within
    while (found := _matching(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def _matching(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if marker in cmdline and state != "Z":
                    found.append(int(pid))
            except OSError:
                pass
    return found


@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
def test_a_timeout_leaves_no_process_behind(settings, sandbox):
    if sandbox == "bwrap" and BWRAP_PROBLEM:
        pytest.skip(f"no working sandbox: {BWRAP_PROBLEM}")
    settings.AGENTFLOW_EXECUTOR_SANDBOX = sandbox
    marker = str(3000 + uuid.uuid4().int % 900)
    # a grandchild in the background, its parent waiting: a plain kill would leave it running
    result = runner.run("sleepy", [f"sh -c 'sleep {marker}' & sleep {marker}.5; wait"])
    assert result.timed_out and result.execution.timed_out
    assert result.execution.duration_ms < 5000
    assert _alive(f"sleep{chr(0)}{marker}") == []


@needs_bwrap
def test_the_network_is_unreachable_inside():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        code = (
            f"import socket; s = socket.create_connection(('127.0.0.1', {port}), timeout=2); "
            "print('connected')"
        )
        result = runner.run("python", [code])
    finally:
        server.close()
    assert result.exit_code != 0
    assert "connected" not in result.stdout
    assert "Connection refused" in result.stderr or "unreachable" in result.stderr.lower()


@needs_bwrap
def test_the_file_size_limit_triggers():
    result = runner.run("small", ["open('big', 'wb').write(b'x' * 4 * 1024 * 1024)"])
    assert result.exit_code != 0
    assert "File too large" in result.stderr or result.killed or result.exit_code > 128


@needs_bwrap
def test_the_cpu_limit_triggers():
    result = runner.run("small", ["while True: pass"])
    assert not result.timed_out  # the CPU limit ended it, well before the 10 s timeout
    assert result.exit_code != 0
    assert result.execution.duration_ms < 8000


@needs_bwrap
def test_the_memory_limit_triggers():
    result = runner.run("tight", ["b = bytearray(512 * 1024 * 1024); print('allocated')"])
    assert result.exit_code != 0 and "allocated" not in result.stdout
    assert "MemoryError" in result.stderr


@needs_bwrap
def test_the_open_files_limit_triggers():
    result = runner.run("tight", ["fs = [open('/dev/null') for _ in range(64)]; print('opened')"])
    assert result.exit_code != 0 and "opened" not in result.stdout
    assert "Too many open files" in result.stderr


@needs_bwrap
def test_a_read_only_bind_under_tmp_is_visible_over_the_private_tmp():
    from tests.executor.allowlist_for_tests import BIND_UNDER_TMP

    Path(BIND_UNDER_TMP).mkdir(exist_ok=True)
    (Path(BIND_UNDER_TMP) / "here.txt").write_text("visible")
    result = runner.run("bound", [f"cat {BIND_UNDER_TMP}/here.txt; touch {BIND_UNDER_TMP}/new"])
    assert result.stdout.strip() == "visible"
    assert "Read-only file system" in result.stderr and not (Path(BIND_UNDER_TMP) / "new").exists()


def test_off_by_default_refused(settings):
    settings.AGENTFLOW_EXECUTOR_ENABLED = False
    with pytest.raises(Refused, match="executor is off"):
        runner.run("true")
    assert not Execution.objects.exists()
    assert AuditEntry.objects.filter(action="executor.run", result="refused").count() == 1


def test_a_disabled_entry_is_refused():
    DisabledEntry.objects.create(name="true")
    with pytest.raises(Refused, match="disabled by the admin"):
        runner.run("true")


def test_unknown_entry_and_bad_arguments_are_refused():
    with pytest.raises(Refused, match="unknown command"):
        runner.run("rm", ["-r", "/"])
    with pytest.raises(Refused, match="at most 0"):
        runner.run("true", ["x"])


@needs_bwrap
def test_an_execution_is_recorded_and_audited():
    result = runner.run("sh", ["echo out; echo err >&2; exit 3"], asked_by="run 7", run_id=7)
    row = Execution.objects.get(pk=result.execution.pk)
    assert (row.command, row.args, row.run_id, row.exit_code) == (
        "sh",
        ["echo out; echo err >&2; exit 3"],
        7,
        3,
    )
    assert row.output_bytes == 8 and not row.running and not row.timed_out
    entry = AuditEntry.objects.get(action="executor.run", target_id="sh")
    assert entry.result == "error" and "exit 3" in entry.message


def test_the_command_kind_validates_its_params():
    from django.core.exceptions import ValidationError

    assert actions.validate_params("command", {"entry": "true"}) == {"entry": "true", "args": []}
    with pytest.raises(ValidationError, match="entry must be one of"):
        actions.validate_params("command", {"entry": "rm"})
    with pytest.raises(ValidationError, match="forbidden pattern"):
        actions.validate_params("command", {"entry": "sh", "args": ["sudo ls"]})


def test_the_automation_status_shows_the_sandbox(settings):
    from executor.hooks import status_rows

    settings.AGENTFLOW_EXECUTOR_SANDBOX = "none"
    rows = {row["entry"]: row for row in status_rows()}
    assert "unsandboxed" in rows["true"]["sandbox"]


@pytest.mark.parametrize("index", range(6))
def test_unsandboxed_the_same_payloads_do_delete(settings, tmp_path, index):
    """The payloads are real: without the sandbox each one deletes its file (so the test above can fail)."""
    settings.AGENTFLOW_EXECUTOR_SANDBOX = "none"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    name, payload = _payloads([victim])[index]
    runner.run(name, [payload], asked_by="test")
    assert not victim.exists()


@needs_bwrap
@pytest.mark.django_db(transaction=True)
def test_a_stop_engaged_on_another_host_kills_the_command_through_its_row():
    import threading
    import time

    results = []
    thread = threading.Thread(target=lambda: results.append(runner.run("long", ["sleep 25"])))
    thread.start()
    deadline = time.monotonic() + 10
    while not Execution.objects.filter(running=True, pgid__isnull=False).exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    Execution.objects.filter(running=True).update(host="worker-host-2")  # not this host: no killpg here
    started = time.monotonic()
    assert runner.kill_live("test") == 1
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - started < 5
    (result,) = results
    assert result.killed and not result.timed_out and result.execution.killed


@needs_bwrap
@pytest.mark.django_db(transaction=True)
def test_the_emergency_stop_hook_kills_live_process_groups():
    import threading
    import time

    from scheduler import stops

    hook = next(h for h in stops.hooks() if h.name == "executor")
    marker = str(4000 + uuid.uuid4().int % 900)
    results = []
    thread = threading.Thread(
        target=lambda: results.append(
            runner.run("long", [f"sh -c 'sleep {marker}' & sleep {marker}.5; wait"])
        )
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not Execution.objects.filter(running=True, pgid__isnull=False).exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    outcome = hook.engage(type("Stop", (), {"pk": 1})(), [])
    thread.join(10)
    assert outcome.notes == ["executor: killed 1 live process group(s)"]
    (result,) = results
    assert result.killed and not result.timed_out and result.execution.duration_ms < 10000
    assert _alive(f"sleep{chr(0)}{marker}") == []


@needs_bwrap
def test_a_command_run_through_the_queue(redis_prefix, settings):
    from scheduler import queue
    from scheduler.models import Run

    run = queue.enqueue(kind="command", params={"entry": "sh", "args": ["echo from-the-sandbox"]})
    queue.start_next("executor-test")
    run = Run.objects.get(pk=run.pk)
    assert run.status == "succeeded", run.error
    assert "from-the-sandbox" in run.result
    assert Execution.objects.get(run_id=run.pk).exit_code == 0

    settings.AGENTFLOW_EXECUTOR_ENABLED = False
    refused = queue.enqueue(kind="command", params={"entry": "true"}, max_attempts=1)
    queue.start_next("executor-test")
    refused = Run.objects.get(pk=refused.pk)
    assert refused.status == "failed" and "executor is off" in refused.error


def test_an_entrys_environment_is_added_but_cannot_replace_path_or_home():
    from executor.entries import Entry

    entry = Entry("x", ["true"], env=(("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1"), ("PATH", "/evil")))
    env = runner._env("/home/sandbox", entry)
    assert env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] == "1"
    assert env["PATH"] == runner.SAFE_PATH and env["HOME"] == "/home/sandbox"


def test_disabling_and_enabling_an_entry_in_the_admin_is_audited(client, admin_user):
    from django.urls import reverse

    client.force_login(admin_user)
    add = reverse("admin:executor_disabledentry_add")
    refused = client.post(add, {"name": "rm", "reason": "x"})
    assert refused.status_code == 200 and not DisabledEntry.objects.exists()  # not in the allowlist
    assert client.post(add, {"name": "sh", "reason": "incident 42"}).status_code == 302
    entry = DisabledEntry.objects.get(name="sh")
    delete = reverse("admin:executor_disabledentry_delete", args=[entry.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 302
    rows = list(AuditEntry.objects.filter(target_type="command", target_id="sh").order_by("id"))
    assert [(r.action, r.reason, r.actor_label) for r in rows] == [
        ("executor.disable", "incident 42", admin_user.get_username()),
        ("executor.enable", "", admin_user.get_username()),
    ]
