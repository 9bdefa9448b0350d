"""Result actions in automation as code (scheduler/results_config.py): ``on_success`` /
``on_failure`` of ``[[automation.schedule.jobs]]``, exported, imported idempotently, validated
before anything is written, in the dry run's plan and removed by ``--prune`` only."""

from __future__ import annotations

import tomllib
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from scheduler import automation_io
from scheduler.automation import ConfigError
from scheduler.models import Job, ResultAction
from tests.support.receivers import make_channel

pytestmark = [pytest.mark.django_db]

DOCUMENT = """
[[automation.schedule.jobs]]
name = "morning_report"
kind = "noop"
on_success = [{ channel = "reports" }, { github_comment = true }]
on_failure = [{ run_job = "report_failed" }, { channel = "ops", enabled = false }]

[[automation.schedule.jobs]]
name = "report_failed"
kind = "noop"
"""


@pytest.fixture
def channels(db):
    return {
        name: make_channel(name, "slack", secret=f"http://127.0.0.1:9/services/T0/B0/{name}")
        for name in ("reports", "ops")
    }


def run(*args: str) -> str:
    out = StringIO()
    call_command("automation", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def actions() -> list[tuple[str, str, str, str, bool]]:
    rows = ResultAction.objects.select_related("job", "channel", "target_job").order_by("job__name", "id")
    return [
        (
            a.job.name,
            a.when,
            a.kind,
            a.channel.name if a.channel else a.target_job.name if a.target_job else "",
            a.enabled,
        )
        for a in rows
    ]


EXPECTED = [
    ("morning_report", "success", "channel", "reports", True),
    ("morning_report", "success", "github_comment", "", True),
    ("morning_report", "failure", "run_job", "report_failed", True),
    ("morning_report", "failure", "channel", "ops", False),
]


def test_import_creates_the_actions_and_a_second_import_changes_nothing(channels, tmp_path):
    path = tmp_path / "automation.toml"
    path.write_text(DOCUMENT)
    out = run("import", str(path))
    assert "create  result action morning_report on success: channel reports" in out
    assert "create  result action morning_report on success: comment on the GitHub PR or issue" in out
    assert "create  result action morning_report on failure: run job report_failed" in out
    assert "create  result action morning_report on failure: channel ops (disabled)" in out
    assert actions() == EXPECTED
    assert run("import", str(path)).strip() == "nothing to change"  # keyed by job, when and target
    assert actions() == EXPECTED


def test_export_then_import_round_trips(channels):
    automation_io.import_text(DOCUMENT)
    exported = automation_io.export_toml()
    document = tomllib.loads(exported)
    entry = next(e for e in document["automation"]["schedule"]["jobs"] if e["name"] == "morning_report")
    assert entry["on_success"] == [{"channel": "reports"}, {"github_comment": True}]
    assert entry["on_failure"] == [{"run_job": "report_failed"}, {"channel": "ops", "enabled": False}]
    assert entry["kind"] == "noop"  # merged into the job's own entry
    other = next(e for e in document["automation"]["schedule"]["jobs"] if e["name"] == "report_failed")
    assert "on_success" not in other and "on_failure" not in other
    ResultAction.objects.all().delete()
    Job.objects.filter(system=False).delete()
    automation_io.import_text(exported)
    assert actions() == EXPECTED
    assert automation_io.export_toml() == exported
    assert automation_io.import_text(exported).changes == []


def test_the_dry_run_plans_creates_changes_and_removes_and_writes_nothing(channels):
    automation_io.import_text(DOCUMENT)
    changed = (
        DOCUMENT.replace('{ channel = "ops", enabled = false }', '{ channel = "ops" }').replace(
            ", { github_comment = true }", ""
        )
        + '\n[[automation.schedule.jobs]]\nname = "digest"\nkind = "noop"\n'
        + 'on_success = [{ channel = "ops" }]\n'
    )
    result = automation_io.import_text(changed, dry_run=True, prune=True)
    lines = result.lines()
    assert "create  result action digest on success: channel ops" in lines
    assert "change  result action morning_report on failure: channel ops: enabled False → True" in lines
    assert "remove  result action morning_report on success: comment on the GitHub PR or issue" in lines
    assert actions() == EXPECTED  # a dry run writes nothing
    assert not Job.objects.filter(name="digest").exists()
    # Without --prune an action the file leaves out stays; with it, it goes.
    plain = automation_io.import_text(changed)
    assert not any(c.action == "remove" and c.kind == "result action" for c in plain.changes)
    assert ("morning_report", "success", "github_comment", "", True) in actions()
    automation_io.import_text(changed, prune=True)
    assert actions() == [
        ("digest", "success", "channel", "ops", True),
        ("morning_report", "success", "channel", "reports", True),
        ("morning_report", "failure", "run_job", "report_failed", True),
        ("morning_report", "failure", "channel", "ops", True),
    ]


def test_prune_leaves_the_actions_of_jobs_it_keeps_and_drops_those_of_jobs_it_removes(channels):
    automation_io.import_text(DOCUMENT)
    only_handler = '[[automation.schedule.jobs]]\nname = "report_failed"\nkind = "noop"\n'
    automation_io.import_text(only_handler)  # not pruning: morning_report and its actions stay
    assert actions() == EXPECTED
    result = automation_io.import_text(only_handler, prune=True)
    assert "remove  job morning_report: noop, not in the file" in result.lines()
    assert actions() == []


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ('{ channel = "nowhere" }',
         "automation.schedule.jobs[0].on_success[0].channel: no notification channel named 'nowhere' "
         "(channels are set up on the Notifications page or in the admin; existing: ops, reports)"),
        ('{ run_job = "ghost" }',
         "automation.schedule.jobs[0].on_success[0].run_job: no job named 'ghost' (neither existing nor "
         "declared in the file)"),
        ('{ run_job = "morning_report" }',
         "automation.schedule.jobs[0].on_success[0].run_job: a job cannot run itself with its own result"),
        ('{ channel = "ops", run_job = "report_failed" }',
         "automation.schedule.jobs[0].on_success[0]: exactly one of channel = \"<channel>\", run_job = "
         "\"<job>\" or github_comment = true (this one has channel and run_job)"),
        ("{ }", "automation.schedule.jobs[0].on_success[0]: exactly one of"),
        ("{ github_comment = false }", "on_success[0].github_comment: github_comment = true"),
        ('{ channel = "ops", colour = "red" }', "on_success[0].colour: unknown key (known: channel, "),
        ('{ channel = "ops", enabled = "yes" }', "on_success[0].enabled: true or false"),
        ('{ channel = "ops" }, { channel = "ops" }', "on_success[1]: the same action as on_success[0]"),
        ('"ops"', "on_success[0]: an action is a table"),
    ],
)  # fmt: skip
def test_a_bad_action_is_refused_by_its_place_and_nothing_is_written(channels, action, message):
    text = DOCUMENT.replace('[{ channel = "reports" }, { github_comment = true }]', f"[{action}]")
    with pytest.raises(ConfigError) as caught:
        automation_io.import_text(text)
    assert any(message in m for m in caught.value.messages), caught.value.messages
    assert not Job.objects.filter(name__in=["morning_report", "report_failed"]).exists()
    assert not ResultAction.objects.exists()


def test_on_success_must_be_a_list_and_the_command_says_nothing_was_written(channels, tmp_path):
    path = tmp_path / "automation.toml"
    path.write_text(DOCUMENT.replace('on_success = [{ channel = "reports" }, { github_comment = true }]',
                                     'on_success = "reports"'))  # fmt: skip
    err = StringIO()
    with pytest.raises(CommandError, match="nothing was written"):
        call_command("automation", "import", str(path), stdout=StringIO(), stderr=err)
    assert 'automation.schedule.jobs[0].on_success: a list of actions, e.g. [{ channel = "reports" }]' in (
        err.getvalue()
    )
    assert not ResultAction.objects.exists()


def test_a_run_job_may_name_a_job_declared_later_in_the_file_but_not_one_pruned(channels):
    automation_io.import_text(DOCUMENT)  # report_failed is declared after morning_report: fine
    Job.objects.create(name="legacy_handler", kind="noop")
    text = DOCUMENT.replace('run_job = "report_failed"', 'run_job = "legacy_handler"')
    assert automation_io.import_text(text, dry_run=True).changes  # it exists and stays
    with pytest.raises(ConfigError, match=r"on_failure\[0\]\.run_job: no job named 'legacy_handler'"):
        automation_io.import_text(text, prune=True)  # --prune would remove it
    assert Job.objects.filter(name="legacy_handler").exists()
