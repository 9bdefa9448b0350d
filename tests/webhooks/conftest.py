from __future__ import annotations

from typing import Any

import pytest

from scheduler.models import Job
from tests.support.webhooks import as_meta, new_secret, request_for
from webhooks.models import Endpoint


@pytest.fixture(autouse=True)
def _isolated(redis_prefix):
    return redis_prefix  # the rate limiter's counters are this test's own


@pytest.fixture
def job(db) -> Job:
    return Job.objects.create(
        name="review-pr", kind="noop", prompt_template="Review {{ input.repository }} #{{ input.pr }}"
    )


def make_endpoint(job: Job, provider: str = "github", **fields: Any) -> Endpoint:
    fields.setdefault("slug", f"{provider}-hook")
    fields.setdefault("secret", new_secret(provider))
    fields.setdefault("events", ["*"])
    return Endpoint.objects.create(job=job, provider=provider, **fields)


def post(
    client, endpoint: Endpoint, *, body: bytes | None = None, headers: dict[str, str] | None = None, **kw
):
    """POST a delivery signed with the endpoint's secret (or the given body and headers)."""
    if body is None:
        body, signed_headers = request_for(endpoint.provider, kw.pop("secret", endpoint.secret), **kw)
        headers = {**signed_headers, **(headers or {})}
    return client.post(endpoint.path, body, content_type="application/json", headers=as_meta(headers or {}))
