"""The File watches pages in a browser: light and dark, 390 px and 1400 px (nothing scrolls
sideways, screenshots in test-artifacts/), with a watching, a missing and a disabled watch, real
events and runs from a flush, and the watcher's heartbeat."""

from __future__ import annotations

import os
import time

import pytest

from tests.support.browser import login, page_checked

pytestmark = [pytest.mark.browser]


def make_watches(root) -> int:
    from scheduler.models import Job, Watch
    from scheduler.triggers import watch as w

    job = Job.objects.create(name="process-incoming-invoices", kind="noop")
    inbox = root / "incoming" / "invoices-from-the-accounting-department"
    inbox.mkdir(parents=True)
    watching = Watch.objects.create(
        name="invoices", directory=str(inbox), patterns=["*.pdf", "**/*.PDF"], events=["created", "modified"],
        recursive=True, job=job, move_to=str(root / "done"), state=Watch.State.WATCHING,
    )  # fmt: skip
    Watch.objects.create(
        name="scans", directory=str(root / "scanner" / "a-directory-that-was-removed-by-someone"),
        patterns=["*.tiff"], events=["created"], job=job, state=Watch.State.MISSING,
        state_detail=f"{root}/scanner/a-directory-that-was-removed-by-someone does not exist",
    )  # fmt: skip
    Watch.objects.create(
        name="exports", directory=str(root / "exports"), events=["created", "deleted"], job=job,
        enabled=False, state=Watch.State.DISABLED,
    )  # fmt: skip
    paths = []
    for i in range(4):
        path = inbox / f"invoice-2026-12-{i:02}-with-a-long-file-name.pdf"
        path.write_bytes(b"%PDF")
        paths.append(str(path))
    w.flush(w.Target.of(watching), paths[:2])
    w.flush(w.Target.of(watching), paths[2:])
    w.beat(
        {
            "pid": os.getpid(),
            "host": "agentflow-host",
            "started": time.time() - 3720,
            "watches": 1,
            "inotify_watches": 3,
        },
        ttl=60,
    )
    return watching.pk


@pytest.mark.parametrize("width", [390, 1400])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_watches_pages_fit_a_phone_and_a_desktop_in_light_and_dark(
    redis_prefix, chromium, live_server_url, operator, scheme, width, tmp_path
):
    pk = make_watches(tmp_path)
    context = chromium.new_context(
        viewport={"width": width, "height": 844 if width < 800 else 900}, color_scheme=scheme
    )
    page = context.new_page()
    try:
        login(page, live_server_url, "operator", "operator-pass")
        page.goto(f"{live_server_url}/triggers/watches/")
        page.wait_for_load_state("networkidle")
        assert page.locator("#watches tbody tr[id^=watch-]").count() == 3
        assert "Directory missing" in page.locator("#watches").inner_text()
        assert "Alive" in page.locator("#watcher-alive").inner_text()
        page_checked(page, "watches", width, scheme)
        page.get_by_role("link", name="invoices", exact=True).click()
        page.wait_for_load_state("networkidle")
        assert page.locator("#watch-events tbody tr").count() == 4
        assert page.locator("#watch-runs tbody tr").count() == 2
        page_checked(page, "watch", width, scheme)
        assert page.url.endswith(f"/triggers/watches/{pk}/")
    finally:
        context.close()
