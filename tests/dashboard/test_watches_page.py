"""The File watches pages (/triggers/watches/ and a watch's page): each watch with directory,
patterns, events, job, state, last event and runs; recent events and runs; the watcher process
from its real Redis heartbeat and the kernel's inotify limits."""

from __future__ import annotations

import os

import pytest

from scheduler.models import Job, Run, Watch
from scheduler.triggers import watch as w
from tests.support.html import dom

pytestmark = [pytest.mark.django_db, pytest.mark.redis, pytest.mark.usefixtures("redis_prefix")]


def text(node) -> str:
    return " ".join(node.text.split())


def facts(node) -> dict[str, str]:
    return {text(d.find("dt")): text(d.find("dd")) for d in node.find_all("div") if d.has("dt")}


@pytest.fixture
def web(client, operator):
    client.force_login(operator)
    return client


@pytest.fixture
def inbox(tmp_path, settings):
    settings.AGENTFLOW_WATCH_ROOTS = [str(tmp_path)]
    (tmp_path / "in").mkdir()
    job = Job.objects.create(name="process-pdf", kind="noop")
    return Watch.objects.create(
        name="inbox",
        directory=str(tmp_path / "in"),
        patterns=["*.pdf", "**/*.PDF"],
        events=["created"],
        job=job,
    )


def test_the_pages_need_a_login(client, inbox):
    for url in ("/triggers/watches/", f"/triggers/watches/{inbox.pk}/"):
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_list_shows_each_watch_and_a_missing_directory(web, inbox, tmp_path):
    Watch.objects.filter(pk=inbox.pk).update(
        state=Watch.State.MISSING, state_detail=f"{tmp_path}/in does not exist"
    )
    page = dom(web.get("/triggers/watches/"))
    row = page.find("tr", id=f"watch-{inbox.pk}")
    shown = text(row)
    assert str(tmp_path / "in") in shown and "*.pdf" in shown and "**/*.PDF" in shown
    assert "created" in shown and "process-pdf" in shown and "Directory missing" in shown and "never" in shown
    assert row.has("span", **{"data-kind": "watch", "data-status": "missing"})
    assert "1 watch cannot watch its directory" in text(page.find(id="watch-problems"))
    assert "Not seen" in text(page.find(id="watcher-alive"))


def test_the_process_card_reads_the_heartbeat_and_the_inotify_limits(web, inbox):
    w.beat({"pid": os.getpid(), "host": "here", "started": 0, "watches": 1, "inotify_watches": 42}, ttl=30)
    page = dom(web.get("/triggers/watches/"))
    card = text(page.find(id="watcher-process"))
    assert "Alive" in card and str(os.getpid()) in card and "here" in card
    limits = w.inotify_limits()
    if limits["max_user_watches"] is None:
        pytest.skip("not Linux: no inotify limits to show")
    assert f"42 of {limits['max_user_watches']:,} inotify watches" in card
    assert f"max {limits['max_user_instances']} per user" in card


def test_a_watch_page_lists_its_events_and_runs(web, inbox, tmp_path):
    (tmp_path / "in" / "a.pdf").write_bytes(b"x")
    done = w.flush(w.Target.of(inbox), [str(tmp_path / "in" / "a.pdf")])
    run = Run.objects.get(pk=done.runs[0])
    page = dom(web.get(f"/triggers/watches/{inbox.pk}/"))
    events = text(page.find("table", id="watch-events"))
    assert "Created" in events and str(tmp_path / "in" / "a.pdf") in events and f"#{run.pk}" in events
    runs = text(page.find("table", id="watch-runs"))
    assert f"#{run.pk}" in runs and "Queued" in runs
    shown = facts(page.find(id="watch-facts"))
    assert shown["Runs made"] == "1" and shown["Files handled"] == "1" and shown["Job"] == "process-pdf"
    assert web.get("/triggers/watches/99999/").status_code == 404


def test_an_empty_list_says_how_to_add_one(web):
    page = dom(web.get("/triggers/watches/"))
    assert "No file watch yet." in text(page.find("table", id="watches"))
