"""The Queue and Jobs pages in a browser: pause and resume from the page, Run now shows the run."""

from __future__ import annotations

import pytest

from tests.support.browser import login, screenshot

pytestmark = [pytest.mark.browser]


def test_an_operator_pauses_and_resumes_a_priority_from_the_queue_page(page, live_server_url, operator):
    from scheduler.models import QueuePause

    login(page, live_server_url, "operator", "operator-pass")
    page.goto(f"{live_server_url}/queue/")
    page.once("dialog", lambda d: d.accept())
    page.click("#pause-normal")
    page.wait_for_selector("#pause-priority-normal")
    assert "Paused the normal priority." in page.inner_text("#banners")
    assert QueuePause.objects.filter(scope="priority", value="normal").exists()
    assert page.locator("#pause-normal").count() == 0
    screenshot(page, "queue-paused")
    page.click("#pause-priority-normal button")
    page.wait_for_selector("#pause-normal")
    assert "Nothing is paused." in page.inner_text("#pauses")
    assert not QueuePause.objects.exists()


def test_run_now_on_the_job_page_shows_the_new_run(page, live_server_url, operator):
    from scheduler.models import Job, Run

    job = Job.objects.create(name="report", kind="noop", params={})
    login(page, live_server_url, "operator", "operator-pass")
    page.goto(f"{live_server_url}/jobs/{job.pk}/")
    page.once("dialog", lambda d: d.accept())
    page.click("#run-now")
    run = None
    page.wait_for_selector("#job-runs tbody tr[id^=run-]")
    run = Run.objects.get(job=job)
    assert page.locator(f"#run-{run.pk}").count() == 1
    assert run.trigger == "user"
