"""File watches without the watcher process: validation against the roots, patterns, flush
(handled files, created / modified / deleted, batches), the move after success, the directory
state and its alert, and the automation sections. The process is in test_watch_watcher.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from scheduler import alert_rules, automation, queue
from scheduler.models import Alert, Job, Run, Watch, WatchEvent, WatchFile
from scheduler.triggers import watch as w
from scheduler.triggers import watch_config

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


@pytest.fixture
def root(tmp_path, settings, redis_prefix):
    settings.AGENTFLOW_WATCH_ROOTS = [str(tmp_path / "root")]
    (tmp_path / "root" / "in").mkdir(parents=True)
    return tmp_path / "root"


@pytest.fixture
def job():
    return Job.objects.create(name="process-file", kind="noop")


def make_watch(root: Path, job: Job, **fields) -> Watch:
    values = {
        "name": "inbox",
        "directory": str(root / "in"),
        "patterns": ["*.pdf"],
        "events": ["created", "modified", "deleted"],
        "job": job,
    }
    values.update(fields)
    watch = Watch(**values)
    watch.full_clean()
    watch.save()
    return watch


# --- validation ----------------------------------------------------------------------------------


def test_a_directory_outside_the_roots_is_refused_with_the_roots_named(root, job, tmp_path):
    watch = Watch(name="etc", directory="/etc", patterns=["*"], events=["created"], job=job)
    with pytest.raises(ValidationError) as caught:
        watch.full_clean()
    message = caught.value.message_dict["directory"][0]
    assert "/etc is outside the watch roots" in message and str(root) in message
    assert "AGENTFLOW_WATCH_ROOTS" in message


def test_a_symlink_out_of_the_roots_is_outside_too(root, job, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "link")
    watch = Watch(name="sneaky", directory=str(root / "link"), events=["created"], job=job)
    with pytest.raises(ValidationError, match="outside the watch roots"):
        watch.full_clean()


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"directory": "in"}, "directory", "not an absolute path"),
        ({"events": ["renamed"]}, "events", "choose one or more of created, modified, deleted"),
        ({"events": []}, "events", "choose one or more"),
        ({"patterns": ["../*.pdf"]}, "patterns", "relative to the directory"),
        ({"move_to": "/tmp/out"}, "move_to", "outside the watch roots"),
    ],
)
def test_bad_fields_are_refused_with_a_message(root, job, fields, field, message):
    values = {"name": "x", "directory": str(root / "in"), "events": ["created"], "job": job, **fields}
    with pytest.raises(ValidationError) as caught:
        Watch(**values).full_clean()
    assert message in " ".join(caught.value.message_dict[field])


def test_a_tilde_directory_under_a_root_is_accepted(root, job, monkeypatch):
    monkeypatch.setenv("HOME", str(root))
    Watch(name="home", directory="~/in", events=["created"], job=job).full_clean()


# --- patterns --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "relative", "hit"),
    [
        (["*.pdf"], "a.pdf", True),
        (["*.pdf"], "sub/deep/a.pdf", True),  # a name pattern matches at any depth
        (["*.pdf"], "a.pdf.part", False),
        (["**/*.csv"], "a.csv", True),
        (["**/*.csv"], "x/y/a.csv", True),
        (["in/**/*.csv"], "in/a.csv", True),
        (["in/**/*.csv"], "in/x/y/a.csv", True),
        (["in/**/*.csv"], "out/a.csv", False),
        (["in/*.csv"], "in/x/a.csv", False),
        (["report-??.txt"], "report-01.txt", True),
        (["[!.]*"], ".hidden", False),
        ([], "anything/at/all", True),
    ],
)
def test_patterns(patterns, relative, hit):
    assert w.matches(patterns, relative) is hit


def test_a_target_without_recursion_takes_only_its_own_files(root, job):
    target = w.Target.of(make_watch(root, job, recursive=False, move_to=str(root / "done")))
    assert target.wants(str(root / "in" / "a.pdf"))
    assert not target.wants(str(root / "in" / "sub" / "a.pdf"))
    assert not target.wants(str(root / "other" / "a.pdf"))


# --- flush -----------------------------------------------------------------------------------------


def test_a_new_file_makes_one_run_with_its_path_and_a_second_look_none(root, job):
    watch = make_watch(root, job)
    target = w.Target.of(watch)
    path = root / "in" / "a.pdf"
    path.write_bytes(b"%PDF")
    done = w.flush(target, [str(path)])
    run = Run.objects.get(pk=done.runs[0])
    assert run.trigger == Run.Trigger.FILE and run.triggered_by == "watch:inbox" and run.job == job
    assert run.input["paths"] == [str(path)]
    assert run.input["events"] == [{"event": "created", "path": str(path)}]
    assert run.dedupe_key.startswith(f"watch:{watch.pk}:")
    assert w.flush(target, [str(path)]).runs == []  # already handled: same mtime and size
    watch.refresh_from_db()
    assert watch.runs_made == 1 and watch.last_event_at is not None
    assert list(WatchEvent.objects.values_list("event", "run_id")) == [("created", run.pk)]


def test_modified_then_deleted_and_created_then_gone_is_nothing(root, job):
    target = w.Target.of(make_watch(root, job))
    path = root / "in" / "a.pdf"
    path.write_bytes(b"one")
    w.flush(target, [str(path)])
    path.write_bytes(b"two, longer")
    assert Run.objects.get(pk=w.flush(target, [str(path)]).runs[0]).input["events"][0]["event"] == "modified"
    path.unlink()
    assert Run.objects.get(pk=w.flush(target, [str(path)]).runs[0]).input["events"][0]["event"] == "deleted"
    assert not WatchFile.objects.exists()
    ghost = root / "in" / "ghost.pdf"  # created and removed inside one window: never known
    assert w.flush(target, [str(ghost)]).runs == []


def test_events_the_watch_does_not_ask_for_are_recorded_but_start_nothing(root, job):
    target = w.Target.of(make_watch(root, job, events=["deleted"]))
    path = root / "in" / "a.pdf"
    path.write_bytes(b"x")
    assert w.flush(target, [str(path)]).runs == []
    assert WatchFile.objects.filter(path=str(path)).exists()  # handled, so the deletion is known
    path.unlink()
    assert len(w.flush(target, [str(path)]).runs) == 1


def test_a_burst_is_cut_into_runs_of_the_batch_max(root, job, settings):
    settings.AGENTFLOW_WATCH_BATCH_MAX = 3
    target = w.Target.of(make_watch(root, job))
    paths = []
    for i in range(7):
        (root / "in" / f"{i}.pdf").write_bytes(b"x")
        paths.append(str(root / "in" / f"{i}.pdf"))
    runs = Run.objects.filter(pk__in=w.flush(target, paths).runs).order_by("id")
    assert [len(r.input["paths"]) for r in runs] == [3, 3, 1]
    assert sorted(p for r in runs for p in r.input["paths"]) == sorted(paths)


def test_runs_go_through_the_queue_a_pause_parks_them(root, job):
    from scheduler import controls
    from scheduler.audit import Actor

    controls.pause(Actor.system(), scope="all", reason="test")
    target = w.Target.of(make_watch(root, job))
    (root / "in" / "a.pdf").write_bytes(b"x")
    run = Run.objects.get(pk=w.flush(target, [str(root / "in" / "a.pdf")]).runs[0])
    assert run.status == Run.Status.PARKED


def test_the_baseline_records_files_already_there_without_a_run(root, job):
    watch = make_watch(root, job)
    (root / "in" / "old.pdf").write_bytes(b"x")
    target = w.Target.of(watch)
    assert w.record_baseline(target, w.scan(target).files) == 1
    assert w.flush(target, [str(root / "in" / "old.pdf")]).runs == []
    watch.refresh_from_db()
    assert watch.baseline_at is not None
    watch.patterns = ["*.txt"]  # what it matches changed: a new baseline
    watch.save()
    watch.refresh_from_db()
    assert watch.baseline_at is None and not WatchFile.objects.exists()


# --- after success --------------------------------------------------------------------------------


def test_a_succeeded_run_moves_its_files_and_a_clash_gets_a_suffix(
    root, job, django_capture_on_commit_callbacks
):
    done_dir = root / "done"
    target = w.Target.of(make_watch(root, job, move_to=str(done_dir)))
    done_dir.mkdir()
    (done_dir / "a.pdf").write_bytes(b"earlier")
    (root / "in" / "a.pdf").write_bytes(b"new")
    run = Run.objects.get(pk=w.flush(target, [str(root / "in" / "a.pdf")]).runs[0])
    with django_capture_on_commit_callbacks(execute=True):
        started = queue.start_next("test:1")
    assert started is not None and started.pk == run.pk
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED
    assert not (root / "in" / "a.pdf").exists()
    assert (done_dir / "a-1.pdf").read_bytes() == b"new" and (done_dir / "a.pdf").read_bytes() == b"earlier"
    # its handled row went first: the watcher reads the move as nothing, not as a deletion
    assert w.flush(target, [str(root / "in" / "a.pdf")]).runs == []


def test_a_failed_run_leaves_its_files(root, job, django_capture_on_commit_callbacks):
    job.params = {"fail": "invalid_request"}
    job.save()
    target = w.Target.of(make_watch(root, job, move_to=str(root / "done")))
    (root / "in" / "a.pdf").write_bytes(b"x")
    run = Run.objects.get(pk=w.flush(target, [str(root / "in" / "a.pdf")]).runs[0])
    with django_capture_on_commit_callbacks(execute=True):
        queue.start_next("test:1")
    run.refresh_from_db()
    assert run.status == Run.Status.FAILED
    assert (root / "in" / "a.pdf").exists()
    assert w.move_after_success(run) == []


# --- directory state -------------------------------------------------------------------------------


def test_a_missing_or_unreadable_directory_is_a_state_and_an_alert(root, job):
    alert_rules.ensure_rules()
    watch = make_watch(root, job)
    assert w.directory_state(watch)[0] == Watch.State.WATCHING
    (root / "in").rename(root / "gone")
    state, detail = w.directory_state(watch)
    assert state == Watch.State.MISSING and "does not exist" in detail
    assert w.set_state(watch, state, detail)
    alert = Alert.objects.open().get(rule=w.ALERT_RULE, subject="inbox")
    assert "does not exist" in alert.message
    assert not w.set_state(watch, state, detail)  # unchanged: nothing written
    (root / "gone").rename(root / "in")
    w.set_state(watch, *w.directory_state(watch))
    assert not Alert.objects.open().filter(rule=w.ALERT_RULE).exists()
    if os.geteuid() != 0:  # root reads everything
        (root / "in").chmod(0o000)
        try:
            assert w.directory_state(watch)[0] == Watch.State.UNREADABLE
        finally:
            (root / "in").chmod(0o700)


def test_the_evaluator_finds_the_problem_watches(root, job):
    alert_rules.ensure_rules()
    watch = make_watch(root, job)
    Watch.objects.filter(pk=watch.pk).update(state=Watch.State.MISSING, state_detail="/x does not exist")
    alert_rules.evaluate()
    assert Alert.objects.open().filter(rule=w.ALERT_RULE, subject="inbox").exists()
    Watch.objects.filter(pk=watch.pk).update(state=Watch.State.WATCHING, state_detail="")
    alert_rules.evaluate()
    assert not Alert.objects.open().filter(rule=w.ALERT_RULE).exists()


def test_the_inotify_limits_are_read_from_the_kernel():
    limits = w.inotify_limits()
    if not w.INOTIFY.exists():
        pytest.skip("not Linux: no /proc/sys/fs/inotify")
    assert limits["max_user_watches"] and limits["max_user_watches"] > 0
    assert limits["max_user_instances"] and limits["max_user_instances"] > 0


# --- automation ------------------------------------------------------------------------------------


def test_the_config_section_plans_creates_changes_and_prunes(root, job, monkeypatch):
    monkeypatch.setenv("HOME", str(root))
    ctx = automation.PlanContext(job_names={"process-file"})
    entries = [
        {
            "name": "pdfs",
            "directory": "~/in",
            "pattern": "*.pdf",
            "events": ["created"],
            "job": "process-file",
        }
    ]
    assert watch_config.plan(entries, ctx) == [
        automation.Change("create", "watch", "pdfs", "~/in → job process-file")
    ]
    assert ctx.errors == []
    watch_config.apply(entries, ctx)
    watch = Watch.objects.get(name="pdfs")
    assert watch.patterns == ["*.pdf"] and watch.recursive is False and watch.debounce_ms == 1000
    assert watch_config.plan(entries, automation.PlanContext(job_names={"process-file"})) == []
    changed = [{**entries[0], "debounce": "250ms", "pattern": ["*.pdf", "**/*.PDF"]}]
    (change,) = watch_config.plan(changed, automation.PlanContext(job_names={"process-file"}))
    assert change.action == "change" and "debounce_ms 1000 → 250" in change.detail
    assert watch_config.export() == [
        {
            "name": "pdfs",
            "directory": "~/in",
            "pattern": "*.pdf",
            "events": ["created"],
            "job": "process-file",
            "recursive": False,
            "debounce": "1s",
            "enabled": True,
        }
    ]
    pruning = automation.PlanContext(prune=True, job_names={"process-file"})
    assert watch_config.plan([], pruning) == [automation.Change("remove", "watch", "pdfs")]
    watch_config.apply([], pruning)
    assert not Watch.objects.exists()


def test_the_config_section_names_each_wrong_field(root):
    ctx = automation.PlanContext(job_names={"known"})
    entries = [
        {"name": "a", "directory": "/etc", "job": "known"},
        {"name": "b", "directory": str(root / "in"), "job": "unknown", "debounce": "soon", "colour": 1},
    ]
    assert watch_config.plan(entries, ctx) == []
    text = "\n".join(ctx.errors)
    assert "automation.watch.watchers[0].directory: /etc is outside the watch roots" in text
    assert "automation.watch.watchers[1].job: 'unknown' is not a job" in text
    assert "automation.watch.watchers[1].debounce" in text


def test_the_import_refuses_a_watchers_unknown_key_and_writes_nothing(root, job):
    """The section names its fields, so the import refuses any other key (every one, by place)."""
    from scheduler import automation_io

    (root / "in").mkdir(exist_ok=True)
    text = (
        f'[[automation.watch.watchers]]\nname = "pdfs"\ndirectory = "{root / "in"}"\njob = "{job.name}"\n'
        'colour = "blue"\npatern = "*.pdf"\n'
    )
    with pytest.raises(automation.ConfigError) as caught:
        automation_io.import_text(text)
    messages = caught.value.messages
    assert "automation.watch.watchers[0].colour: unknown key (known: " in messages[0]
    assert any(m.startswith("automation.watch.watchers[0].patern: unknown key") for m in messages)
    assert "pattern" in messages[0] and "move_to" in messages[0]  # the allowed keys are named
    assert not Watch.objects.exists()
    ok = text.replace('colour = "blue"\npatern = "*.pdf"\n', 'pattern = "*.pdf"\n')
    assert [c.action for c in automation_io.import_text(ok).changes] == ["create"]
    assert Watch.objects.get(name="pdfs").patterns == ["*.pdf"]


def test_the_status_section_lists_watches_with_directory_and_state(root, job):
    make_watch(root, job)
    (section,) = [s for s in automation.status_sections() if s.key == "watches"]
    (row,) = section.rows()
    assert (
        row["directory"] == str(root / "in")
        and row["state"] == "Not started yet"
        and row["job"] == "process-file"
    )


def test_the_rescan_after_a_burst_finds_what_inotify_dropped(root, job):
    """The kernel's inotify queue overflows under a burst and drops events silently: the rescan
    compares the directory with the handled rows (the watcher runs it once a burst is quiet)."""
    from scheduler.triggers.watcher import Watcher

    target = w.Target.of(make_watch(root, job))
    (root / "in" / "handled.pdf").write_bytes(b"x")
    (root / "in" / "gone.pdf").write_bytes(b"x")
    w.flush(target, [str(root / "in" / "handled.pdf"), str(root / "in" / "gone.pdf")])
    (root / "in" / "dropped.pdf").write_bytes(b"never reported")  # as if its event was lost
    (root / "in" / "gone.pdf").unlink()
    missed, directories = w.differences(target)
    assert sorted(missed) == [str(root / "in" / "dropped.pdf"), str(root / "in" / "gone.pdf")]
    assert directories == 1
    watcher = Watcher(poll_seconds=1)
    watcher.targets = [target]
    watcher.rescan_due[target.pk] = 0.0  # its burst ended long ago
    watcher.rescan_quiet()
    watcher.flush_due()
    assert watcher.recovered == 2
    events = [e for r in Run.objects.order_by("-id")[:1] for e in r.input["events"]]
    assert sorted((e["event"], Path(e["path"]).name) for e in events) == [
        ("created", "dropped.pdf"),
        ("deleted", "gone.pdf"),
    ]
