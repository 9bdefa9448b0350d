"""agentflow.lib.logcontext: every line is structured (JSON in production, key=value elsewhere)
and every line logged inside bind_run(...) carries the run's fields."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest
import structlog
from django.conf import settings

from agentflow.lib import logcontext
from agentflow.lib.logcontext import bind_run
from tests.support.pyprocs import start_python

RUN = {"run_id": 42, "job": "nightly-report", "attempt": "att-7", "gateway": "prod", "agent": "main"}


@pytest.fixture
def capture():
    """A logger whose lines go through the settings' formatter into a string."""

    def make(fmt: str) -> tuple[logging.Logger, io.StringIO]:
        out = io.StringIO()
        handler = logging.StreamHandler(out)
        handler.setFormatter(logcontext.formatter(fmt))
        logger = logging.getLogger(f"tests.logcontext.{fmt}")
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel(logging.INFO)
        return logger, out

    yield make
    for fmt in logcontext.FORMATS:
        logging.getLogger(f"tests.logcontext.{fmt}").handlers.clear()


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_a_line_logged_inside_bind_run_carries_the_run_fields(capture):
    logger, out = capture("json")
    with bind_run(**RUN):
        logger.info("sent to %s", "the gateway", extra={"session_key": "s-1"})
    logger.info("outside")
    inside, outside = (json.loads(line) for line in lines(out))
    assert {k: inside[k] for k in RUN} == RUN
    assert inside["event"] == "sent to the gateway"
    assert inside["session_key"] == "s-1"
    assert (inside["level"], inside["logger"]) == ("info", "tests.logcontext.json")
    assert "timestamp" in inside
    assert not set(RUN) & set(outside)


def test_nested_binds_override_and_restore_and_none_is_left_out(capture):
    logger, out = capture("json")
    with bind_run(run_id=1, job="a"):
        with bind_run(run_id=1, attempt="second"):
            logger.info("retry")
        logger.info("back")
    retry, back = (json.loads(line) for line in lines(out))
    assert (retry["job"], retry["attempt"]) == ("a", "second")
    assert "attempt" not in back and "gateway" not in back


def test_the_fields_follow_into_asyncio_tasks_and_stop_at_the_end(capture):
    logger, out = capture("json")

    async def work():
        await asyncio.sleep(0)
        logger.info("in a task")

    async def main():
        with bind_run(**RUN):
            task = asyncio.create_task(work())
        await task  # started inside the block, it keeps the fields after the block ended
        logger.info("after")

    asyncio.run(main())
    task_line, after = (json.loads(line) for line in lines(out))
    assert task_line["run_id"] == 42 and "run_id" not in after


def test_json_mode_writes_one_valid_json_object_per_line_even_with_a_traceback(capture):
    logger, out = capture("json")
    with bind_run(**RUN):
        try:
            raise RuntimeError("boom\nsecond line")
        except RuntimeError:
            logger.exception("it failed")
        structlog.get_logger("tests.logcontext.json").info("from structlog", tokens=12)
    records = [json.loads(line) for line in lines(out)]  # every line parses
    failed, native = records
    assert "RuntimeError: boom" in failed["exception"] and failed["run_id"] == 42
    assert (native["event"], native["tokens"], native["agent"]) == ("from structlog", 12, "main")


def test_console_mode_is_readable_key_value(capture):
    logger, out = capture("console")
    with bind_run(**RUN):
        logger.warning("slow reply")
    (line,) = lines(out)
    assert "slow reply" in line and "[warning" in line
    for name, value in RUN.items():
        assert f"{name}={value}" in line


def test_a_bad_format_is_refused():
    with pytest.raises(ValueError, match="use one of json, console"):
        logcontext.logging_config("xml", "INFO")


def test_the_settings_send_every_logger_through_the_structured_formatter():
    assert settings.LOGGING["formatters"]["structured"]["fmt"] == "console"  # tests read key=value
    formatters = [h.formatter for h in logging.getLogger().handlers]
    assert any(isinstance(f, structlog.stdlib.ProcessorFormatter) for f in formatters)
    assert settings.CELERY_WORKER_HIJACK_ROOT_LOGGER is False


def test_json_format_setting_makes_djangos_own_lines_json(redis_prefix):
    code = (
        "import logging\n"
        "from agentflow.lib.logcontext import bind_run\n"
        "with bind_run(run_id=5, job='j', attempt='a', gateway='g', agent='x'):\n"
        "    logging.getLogger('django.request').warning('Not Found: /nope')\n"
        "print('{}')\n"
    )
    process = start_python(code, redis_prefix, AGENTFLOW_LOG_FORMAT="json")
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    (line,) = [json.loads(x) for x in err.splitlines() if x.strip()]
    assert line["event"] == "Not Found: /nope" and line["logger"] == "django.request"
    assert (line["run_id"], line["job"], line["attempt"], line["gateway"], line["agent"]) == (
        5,
        "j",
        "a",
        "g",
        "x",
    )
