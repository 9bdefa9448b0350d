"""agentflow.lib.webthreads: the web process serves HTTP requests on a fixed set of long-lived
threads, each keeping its database connection, with the whole middleware chain and the view in
one call on that thread (not a new thread, and a new connection, per request)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import pytest
from asgiref.testing import ApplicationCommunicator
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.test import override_settings
from django.urls import path

from agentflow.lib.webthreads import ThreadedASGIHandler

pytestmark = pytest.mark.django_db(transaction=True)

both_arrived = threading.Barrier(2, timeout=5)


@login_not_required
def whoami(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"thread": threading.current_thread().name, "connection": id(connection.connection)})


@login_not_required
def meet(request: HttpRequest) -> JsonResponse:
    both_arrived.wait()  # only two requests on two threads at once get past this
    return JsonResponse({"thread": threading.current_thread().name})


urlpatterns = [path("whoami", whoami), path("meet", meet)]


@pytest.fixture
def handler() -> Iterator[ThreadedASGIHandler]:
    with override_settings(ROOT_URLCONF=__name__):
        app = ThreadedASGIHandler(threads=2)
        yield app
        app.close()


async def get(app: ThreadedASGIHandler, url: str) -> dict:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": url,
        "raw_path": url.encode(),
        "query_string": b"",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    communicator = ApplicationCommunicator(app, scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(10)
    assert start["status"] == 200, start
    body = await communicator.receive_output(10)
    await communicator.wait(10)
    return json.loads(body["body"])


async def test_requests_one_after_another_use_one_thread_and_one_connection(handler):
    answers = [await get(handler, "/whoami") for _ in range(4)]
    assert {a["thread"] for a in answers} == {"web-0_0"}  # the least loaded thread, the first on a tie
    assert len({a["connection"] for a in answers}) == 1  # kept between requests (CONN_MAX_AGE)
    assert handler.in_hand == [0, 0]


async def test_requests_at_the_same_time_run_on_different_threads(handler):
    both_arrived.reset()
    first, second = await asyncio.gather(get(handler, "/meet"), get(handler, "/meet"))
    assert {first["thread"], second["thread"]} == {"web-0_0", "web-1_0"}


def test_the_middleware_chain_and_the_view_run_as_one_sync_call(handler):
    assert not asyncio.iscoroutinefunction(handler._middleware_chain)


def test_the_web_process_serves_http_with_the_configured_threads(settings):
    from agentflow.asgi import application

    http = application.application_mapping["http"]
    assert isinstance(http, ThreadedASGIHandler)
    assert len(http.executors) == settings.AGENTFLOW_WEB_THREADS


def test_threads_must_be_at_least_one():
    with pytest.raises(ValueError, match="at least 1"):
        ThreadedASGIHandler(threads=0)
