"""Webhooks in automation as code (webhooks/automation.py): ``[[automation.webhook.handlers]]``
exported with the secret as a reference, imported idempotently, every unknown key refused by
its place before anything is written, and the status section."""

from __future__ import annotations

import tomllib

import pytest

from scheduler import automation, automation_io
from scheduler.automation import ConfigError
from scheduler.models import Job
from webhooks.models import Endpoint

pytestmark = [pytest.mark.django_db]

HANDLERS = """
[[automation.schedule.jobs]]
name = "review_push"
kind = "noop"

[[automation.webhook.handlers]]
name = "github-push"
provider = "github"
event = ["github.push", "github.pull_request"]
secret = "${HA_GITHUB_SECRET}"
job = "review_push"
branch = "main"
filters = { action = "opened" }
input = { repository = "{{ payload.repository.full_name }}" }
rate_limit = 120
"""


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv("HA_GITHUB_SECRET", "from-the-environment")


def test_import_creates_the_endpoint_and_a_second_import_changes_nothing():
    result = automation_io.import_text(HANDLERS)
    assert "create  webhook github-push: github → job review_push" in result.lines()
    endpoint = Endpoint.objects.get(slug="github-push")
    assert endpoint.events == ["push", "pull_request"] and endpoint.secret == "from-the-environment"
    assert endpoint.secret_env == "HA_GITHUB_SECRET" and endpoint.filters == {"action": "opened"}
    assert endpoint.rate_limit_per_minute == 120 and endpoint.job.name == "review_push"
    assert automation_io.import_text(HANDLERS).changes == []


def test_export_writes_the_reference_never_the_secret_and_round_trips():
    automation_io.import_text(HANDLERS)
    exported = automation_io.export_toml()
    assert "from-the-environment" not in exported
    (handler,) = tomllib.loads(exported)["automation"]["webhook"]["handlers"]
    assert handler["secret"] == "${HA_GITHUB_SECRET}" and handler["event"] == [
        "github.push",
        "github.pull_request",
    ]
    Endpoint.objects.all().delete()
    Job.objects.filter(system=False).delete()
    automation_io.import_text(exported)
    assert Endpoint.objects.get(slug="github-push").secret == "from-the-environment"
    assert automation_io.export_toml() == exported


def test_every_unknown_key_of_a_handler_is_refused_by_its_place_and_nothing_is_written():
    text = HANDLERS.replace("rate_limit = 120", 'rate_limit = 120\nevents = ["push"]\nsecrets = "x"')
    with pytest.raises(ConfigError) as caught:
        automation_io.import_text(text)
    messages = caught.value.messages
    assert any(m.startswith("automation.webhook.handlers[0].events: unknown key (known: ") for m in messages)
    assert any(m.startswith("automation.webhook.handlers[0].secrets: unknown key (known: ") for m in messages)
    assert "event" in messages[0] and "max_body" in messages[0]  # the keys it does take are named
    assert not Endpoint.objects.exists() and not Job.objects.filter(name="review_push").exists()


def test_the_webhook_section_names_its_fields():
    (section,) = [s for s in automation.config_sections() if s.key == "webhook.handlers"]
    assert section.fields is not None and {"provider", "secret", "job", "input"} <= section.fields


def test_the_dry_run_shows_a_change_and_prune_removes_what_the_file_leaves_out():
    automation_io.import_text(HANDLERS)
    Endpoint.objects.create(
        slug="old-hook", provider="hmac", secret="s", job=Job.objects.get(name="review_push")
    )
    changed = HANDLERS.replace('branch = "main"', 'branch = "release/*"')
    lines = automation_io.import_text(changed, dry_run=True, prune=True).lines()
    assert "change  webhook github-push: branch 'main' → 'release/*'" in lines
    assert "remove  webhook old-hook" in lines
    assert Endpoint.objects.get(slug="github-push").branch == "main"  # a dry run writes nothing
    automation_io.import_text(changed, prune=True)
    assert list(Endpoint.objects.values_list("slug", "branch")) == [("github-push", "release/*")]
