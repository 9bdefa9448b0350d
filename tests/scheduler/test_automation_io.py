"""Automation as code: ``manage.py automation export`` / ``import`` (scheduler/automation_io.py) with
the job section (fleet/automation.py) and a second section sharing its key, as the schedule
section does."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from django.conf import settings
from django.core.management import CommandError, call_command

from scheduler import automation, automation_io
from scheduler.automation import Change, ConfigError, ConfigSection, PlanContext
from scheduler.models import AuditEntry, Job
from tests.support.factories import make_agent, make_gateway

pytestmark = [pytest.mark.django_db]

EXAMPLE = Path(settings.BASE_DIR) / "docs" / "automation.example.toml"


@pytest.fixture
def demo(db):
    gateway = make_gateway("demo")
    for agent in ("main", "researcher", "writer"):
        make_agent(gateway, agent)
    return gateway


def run(*args: str) -> str:
    out = StringIO()
    call_command("automation", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "automation.toml"
    path.write_text(text)
    return str(path)


JOBS = """
[[automation.schedule.jobs]]
name = "morning_report"
agent = "main"
prompt = "Write the morning report."
priority = "high"

[[automation.schedule.jobs]]
name = "review_push"
agent = "researcher"
prompt = "Review {{ input.repository }}."
enabled = false
timeout = 300
max_attempts = 2
tags = ["github"]
"""


def test_import_creates_jobs_and_a_second_import_changes_nothing(demo, tmp_path):
    path = write(tmp_path, JOBS)
    out = run("import", path)
    assert "create  job morning_report: main, high" in out
    assert "created 2" in out
    job = Job.objects.get(name="review_push")
    assert job.kind == "agent.prompt"
    assert job.params == {"gateway": demo.pk, "agent": "researcher"}
    assert (job.enabled, job.timeout_seconds, job.max_attempts, job.tags) == (False, 300, 2, ["github"])
    assert job.prompt_template == "Review {{ input.repository }}."
    assert AuditEntry.objects.filter(action="automation.import", result="ok").count() == 1
    assert run("import", path).strip() == "nothing to change"  # idempotent, keyed by name
    assert AuditEntry.objects.filter(action="automation.import").count() == 1


def test_export_then_import_round_trips(demo, tmp_path):
    run("import", write(tmp_path, JOBS))
    Job.objects.create(name="tick_noop", kind="noop", params={"sleep_ms": 5}, concurrency_limit=2)
    exported = run("export")
    document = tomllib.loads(exported)
    entries = {e["name"]: e for e in document["automation"]["schedule"]["jobs"]}
    assert entries["morning_report"]["agent"] == "main"  # one gateway: the agent alone
    assert entries["tick_noop"] == {
        "name": "tick_noop",
        "kind": "noop",
        "params": {"sleep_ms": 5},
        "prompt": "",
        "priority": "normal",
        "enabled": True,
        "timeout": 600,
        "max_attempts": 3,
        "concurrency": 2,
    }
    assert not any(e["name"].startswith("batch-") for e in entries.values())  # system jobs stay out
    before = {j.name: (j.kind, j.params, j.prompt_template, j.priority, j.enabled) for j in Job.objects.all()}
    Job.objects.filter(system=False).delete()
    run("import", write(tmp_path, exported))
    after = {j.name: (j.kind, j.params, j.prompt_template, j.priority, j.enabled) for j in Job.objects.all()}
    assert after == before
    assert run("export") == exported


def test_dry_run_prints_created_changed_removed_with_details_and_writes_nothing(demo, tmp_path):
    run("import", write(tmp_path, JOBS))
    Job.objects.create(name="old_job", kind="noop")
    changed = JOBS.replace('priority = "high"', 'priority = "low"') + (
        '\n[[automation.schedule.jobs]]\nname = "new_one"\nkind = "noop"\n'
    )
    out = run("import", write(tmp_path, changed), "--dry-run", "--prune")
    assert "create  job new_one: noop, normal" in out
    assert 'change  job morning_report: priority "high" → "low"' in out
    assert "remove  job old_job: noop, not in the file" in out
    assert "dry run, nothing written: would create 1, change 1, remove 1" in out
    assert Job.objects.get(name="morning_report").priority == "high"
    assert not Job.objects.filter(name="new_one").exists()
    assert Job.objects.filter(name="old_job").exists()
    assert AuditEntry.objects.filter(action="automation.import").count() == 1  # the first import only


def test_prune_removes_what_the_file_does_not_list_and_keeps_system_jobs(demo, tmp_path):
    Job.objects.create(name="old_job", kind="noop")
    system = Job.objects.filter(system=True).count()
    run("import", write(tmp_path, JOBS))
    assert Job.objects.filter(name="old_job").exists()  # without --prune it stays
    out = run("import", write(tmp_path, JOBS), "--prune")
    assert "remove  job old_job" in out
    assert not Job.objects.filter(name="old_job").exists()
    assert Job.objects.filter(system=True).count() == system


def test_a_bad_entry_writes_nothing_and_every_error_names_its_place(demo, tmp_path):
    bad = (
        JOBS
        + """
[[automation.schedule.jobs]]
name = "broken"
agent = "nobody"
priority = "sometimes"
prompt = "{% if %}"
colour = "blue"
"""
    )
    err = StringIO()
    with pytest.raises(CommandError, match="nothing was written"):
        call_command("automation", "import", write(tmp_path, bad), stdout=StringIO(), stderr=err)
    messages = err.getvalue()
    assert "automation.schedule.jobs[2].colour: unknown key" in messages
    assert "automation.schedule.jobs[2].agent: agent.prompt: gateway demo has no agent 'nobody'" in messages
    assert "automation.schedule.jobs[2].priority: 'sometimes' is not one of" in messages
    assert "automation.schedule.jobs[2].prompt: the prompt template does not parse" in messages
    assert not Job.objects.filter(name__in=["morning_report", "review_push", "broken"]).exists()


def test_structure_errors(demo, tmp_path):
    cases = {
        "[[automation.schedule.jobz]]\nname='x'\n": "automation.schedule.jobz: unknown key",
        "[other]\nx=1\n": "other: unknown key",
        "[[automation.schedule.jobs]]\nkind='noop'\n": "automation.schedule.jobs[0].name: required",
        "[[automation.schedule.jobs]]\nname='a'\nkind='noop'\n" * 2: "jobs[1].name: 'a' is listed twice",
        "automation = 1": "automation: must be a table",
        "[[automation.schedule.jobs]\n": "not valid TOML",
        "[[automation.schedule.jobs]]\nname='x'\nkind='nope'\n": "jobs[0].kind: unknown kind 'nope'",
    }
    for text, expected in cases.items():
        with pytest.raises(ConfigError) as caught:
            automation_io.import_text(text)
        assert any(expected in m for m in caught.value.messages), (text, caught.value.messages)


def test_several_gateways_need_gateway_slash_agent(demo, tmp_path):
    other = make_gateway("prod")
    make_agent(other, "main")
    with pytest.raises(
        ConfigError, match=r'several gateways are registered \(demo, prod\): write "gateway/main"'
    ):
        automation_io.import_text(JOBS)
    run(
        "import",
        write(tmp_path, JOBS.replace('"main"', '"prod/main"').replace('"researcher"', '"demo/researcher"')),
    )
    assert Job.objects.get(name="morning_report").params["gateway"] == other.pk
    exported = tomllib.loads(run("export"))["automation"]["schedule"]["jobs"]
    assert {e["name"]: e["agent"] for e in exported} == {
        "morning_report": "prod/main",
        "review_push": "demo/researcher",
    }


class SharedKeySection:
    """A stand-in for the schedule section: owns ``cron`` of the job entries."""

    def __init__(self) -> None:
        self.crons: dict[str, str] = {}
        self.applied: list[dict[str, str]] = []

    def export(self) -> list[dict[str, Any]]:
        return [{"name": name, "cron": cron} for name, cron in self.crons.items()]

    def plan(self, entries: Sequence[Mapping[str, Any]], ctx: PlanContext) -> list[Change]:
        changes = []
        for index, entry in enumerate(entries):
            cron = entry.get("cron")
            if cron is None:
                continue
            if cron.count(" ") != 4:
                ctx.error("schedule.jobs", index, "cron", f"{cron!r} is not 5 fields")
            elif self.crons.get(entry["name"]) != cron:
                changes.append(Change("create", "schedule", entry["name"], cron))
        return changes

    def apply(self, entries: Sequence[Mapping[str, Any]], ctx: PlanContext) -> None:
        assert Job.objects.filter(name__in=[e["name"] for e in entries]).count() == len(entries)  # jobs first
        for entry in entries:
            if "cron" in entry:
                self.crons[entry["name"]] = entry["cron"]


@pytest.fixture
def shared_section():
    fake = SharedKeySection()
    section = ConfigSection(
        "fake-schedules", "schedule.jobs", 20, fake.export, fake.plan, fake.apply, fields=frozenset({"cron"})
    )
    automation.register_config(section)
    yield fake
    automation._CONFIG.pop("fake-schedules", None)


def test_sections_sharing_a_key_merge_on_export_and_validate_together(demo, tmp_path, shared_section):
    text = JOBS.replace('priority = "high"', 'priority = "high"\ncron = "0 9 * * *"')
    out = run("import", write(tmp_path, text))
    assert "create  schedule morning_report: 0 9 * * *" in out
    assert shared_section.crons == {"morning_report": "0 9 * * *"}
    exported = tomllib.loads(run("export"))["automation"]["schedule"]["jobs"]
    merged = next(e for e in exported if e["name"] == "morning_report")
    assert merged["agent"] == "main" and merged["cron"] == "0 9 * * *"
    # The other section's error stops the job section's writes too.
    bad = text.replace('"0 9 * * *"', '"0 9 *"').replace('"high"', '"low"')
    with pytest.raises(ConfigError, match=r"jobs\[0\]\.cron: '0 9 \*' is not 5 fields"):
        automation_io.import_text(bad)
    assert Job.objects.get(name="morning_report").priority == "high"


def test_secrets_are_environment_references(monkeypatch):
    monkeypatch.setenv("HA_TEST_SECRET", "s3cret")
    assert automation.expand_env("${HA_TEST_SECRET}") == "s3cret"
    assert automation.env_ref("HA_TEST_SECRET") == "${HA_TEST_SECRET}"
    with pytest.raises(ValueError, match="HA_TEST_UNSET is not set"):
        automation.expand_env("${HA_TEST_UNSET}")
    with pytest.raises(ValueError, match=r'given as "\$\{ENV_VAR\}"'):
        automation.expand_env("s3cret")


def test_the_example_files_jobs_import_against_the_demo_gateway(demo):
    """The job section's part of the example (the other sections' fields left out)."""
    from fleet.automation import FIELDS

    document = tomllib.loads(EXAMPLE.read_text())
    jobs = [
        {k: v for k, v in entry.items() if k in FIELDS | {"name"}}
        for entry in document["automation"]["schedule"]["jobs"]
    ]
    text = tomli_w.dumps({"automation": {"schedule": {"jobs": jobs}}})
    result = automation_io.import_text(text)
    assert sorted(c.name for c in result.changes) == sorted(e["name"] for e in jobs)
    assert Job.objects.get(name="half_hourly_check").priority == "low"
    assert automation_io.import_text(text).changes == []


def test_the_whole_example_file_imports_against_the_demo_gateway(demo, monkeypatch):
    monkeypatch.setenv("GITHUB_WEBHOOK_SECRET", "example-secret")
    text = EXAMPLE.read_text()
    try:
        automation_io.parse(text)
    except ConfigError as exc:
        if all("unknown key" in m for m in exc.messages):
            pytest.skip(f"the example uses sections not registered in this build: {exc.messages[0]}")
        raise
    document = tomllib.loads(text)
    result = automation_io.import_text(text)
    names = {e["name"] for e in document["automation"]["schedule"]["jobs"]}
    assert {c.name for c in result.changes if c.kind == "job"} == names
    assert "create  result action review_push on failure: run job review_failed" in result.lines()
    review = Job.objects.get(name="review_push")
    assert sorted(review.result_actions.values_list("when", "kind")) == [
        ("failure", "run_job"),
        ("success", "github_comment"),
    ]
    assert automation_io.import_text(text).changes == []
