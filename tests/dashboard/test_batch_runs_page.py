"""The batch runs page: counts in words, filters by batch and status, identical runs folded."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from scheduler.models import BatchRun, count_words
from tests.support.factories import make_batch_run, make_gateway
from tests.support.html import dom

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def web(client, operator):
    client.force_login(operator)
    return client


def recent_rows(web, **params):
    response = web.get("/batches/", params)
    assert response.status_code == 200
    return dom(response).find("table", id="recent-runs").find("tbody").find_all("tr")


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("panels", 0, "0 panels"),
        ("panels", 1, "1 panel"),
        ("sessions_updated", 3, "3 sessions updated"),
        ("sessions_updated", 1, "1 session updated"),
        ("connected", True, "connected: yes"),
        ("changed", False, "changed: no"),
        ("latency_ms", 2.270466999959808, "latency 2.27 ms"),
        ("changed_paths", ["agents.list", "models"], "changed paths: agents.list, models"),
        ("changed_paths", [], "changed paths: none"),
        ("reason", "locked", "reason: locked"),
        ("stored", 12000, "12,000 stored"),
    ],
)
def test_counts_read_as_words(name, value, words):
    assert count_words(name, value) == words


def test_the_runs_list_shows_counts_as_words_not_python(web):
    gateway = make_gateway()
    make_batch_run("BATCH-003", gateway, counts={"panels": 0, "stored": 0})
    make_batch_run("BATCH-005", gateway, counts={"connected": True, "latency_ms": 2.270466999959808})
    text = " ".join(r.text for r in recent_rows(web))
    assert "0 panels · 0 stored" in text and "connected: yes · latency 2.27 ms" in text
    assert "{" not in text and "True" not in text and "2.2704" not in text


def test_identical_frequent_runs_fold_into_one_row_with_a_count(web):
    gateway = make_gateway()
    now = timezone.now()
    for i in range(30):  # BATCH-003 every 5 s, nothing to do
        make_batch_run(
            "BATCH-003", gateway, counts={"panels": 0, "stored": 0}, started_at=now - timedelta(seconds=5 * i)
        )
    make_batch_run(
        "BATCH-003", gateway, counts={"panels": 1, "stored": 2}, started_at=now - timedelta(seconds=7)
    )
    make_batch_run("BATCH-001", gateway, counts={"sessions": 4}, started_at=now - timedelta(seconds=3))
    rows = recent_rows(web)
    assert len(rows) == 3
    assert "×30" in rows[0].text and "BATCH-003" in rows[0].text  # the newest run's place
    assert "BATCH-001" in rows[1].text and "1 panel · 2 stored" in rows[2].text
    assert "30 runs with the same outcome" not in web.get("/batches/").content.decode()  # 29 folded
    assert "29 runs with the same outcome" in web.get("/batches/").content.decode()
    assert len(recent_rows(web, each="1")) == 32


def test_filters_by_batch_and_status_and_ignores_what_they_do_not_know(web):
    gateway = make_gateway()
    make_batch_run("BATCH-003", gateway, counts={"panels": 0})
    make_batch_run("BATCH-005", gateway, status=BatchRun.Status.ERROR, error="auth failed")
    make_batch_run("BATCH-005", gateway, counts={"connected": True})
    assert [r.find_all("td")[1].text for r in recent_rows(web, batch="BATCH-005")] == ["BATCH-005"] * 2
    errors = recent_rows(web, status="error")
    assert len(errors) == 1 and "auth failed" in errors[0].text
    assert len(recent_rows(web, batch="BATCH-005", status="ok")) == 1
    # Unknown values are no filter (and never an error page).
    assert len(recent_rows(web, batch="BATCH-999'; drop", status="nope")) == 3
    page = dom(web.get("/batches/", {"batch": "BATCH-005", "status": "error"}))
    assert (
        page.find("select", id="run-batch").find("option", value="BATCH-005").attrs.get("selected")
        is not None
    )
    assert (
        page.find("select", id="run-status").find("option", value="error").attrs.get("selected") is not None
    )


def test_each_cell_names_its_column_for_the_narrow_card_layout(web):
    make_batch_run("BATCH-004", status="error", error="boom")
    cells = recent_rows(web)[0].find_all("td")
    assert [c.attrs["data-label"] for c in cells] == [
        "Started", "Batch", "Gateway", "Status", "Duration", "Counts", "Error",
    ]  # fmt: skip
