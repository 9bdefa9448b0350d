"""The example flows of examples/multi_agent/ end to end: the coding assistant fixes its sample
app's bug on the real demo gateway (the stub model's skills, demo/skills.py), runs the sample's
tests with pytest in the executor's sandbox and reviews them; the chat bot answers from its
knowledge base or hands the conversation off to a real local HTTP receiver. Agent runs are
completed by the real fleet listener (a thread of this process)."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from flows import api, spec
from flows.models import Span
from scheduler.models import AuditEntry, Run
from tests.support.factories import make_agent, make_gateway
from tests.support.listening import listening
from tests.support.receivers import receiver

EXAMPLES = Path(django_settings.BASE_DIR) / "examples" / "multi_agent"
CODING = "examples/multi_agent/coding_assistant/flow.yaml"
CHAT = "examples/multi_agent/chat_bot/flow.yaml"
APP = EXAMPLES / "coding_assistant" / "app"


def gateway_test(test):
    """The marks of a test on the real gateway (the listener's thread reads committed rows)."""
    for mark in (pytest.mark.gateway, pytest.mark.redis, pytest.mark.django_db(transaction=True)):
        test = mark(test)
    return test


def test_both_example_flows_validate():
    coding, _, _ = spec.load(CODING)
    assert [s.id for s in coding.steps] == [
        "inspect",
        "draft",
        "patch",
        "tests",
        "review",
        "route",
        "summary",
    ]
    assert [s.type for s in coding.steps][:5] == [
        "workspace_inspector",
        "agent",
        "patch",
        "test_executor",
        "agent",
    ]
    assert coding.step("route").with_["max_visits"] == 3
    chat, _, _ = spec.load(CHAT)
    assert {"classify", "faq", "escalate", "handoff", "audit", "summary"} <= {s.id for s in chat.steps}
    assert chat.context["support"]["threshold"] == 0.6
    kb = json.loads((EXAMPLES / "chat_bot" / "knowledge_base.json").read_text())
    assert len(kb) >= 12 and all(set(e) == {"id", "question", "answer", "keywords"} for e in kb)
    assert len({e["id"] for e in kb}) == len(kb)


@pytest.fixture
def gw(live_openclaw, redis_prefix, own_queues):
    """The session's demo gateway as the only registered one, with its main agent on the stub."""
    row = make_gateway("examples-gw", url=live_openclaw.url, token=live_openclaw.token)
    make_agent(row, "main", model="stub/stub-model")
    return live_openclaw


@pytest.fixture
def executor_on(settings):
    from executor import runner

    problem = runner.sandbox_problem()
    if problem:
        pytest.fail(f"the executor's sandbox does not work here ({problem}): run bin/ensure-bwrap")
    settings.AGENTFLOW_EXECUTOR_ENABLED = True
    settings.AGENTFLOW_EXECUTOR_SANDBOX = "bwrap"


def sample_on_disk(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*.py"))}


# --- the coding assistant ------------------------------------------------------------------------------

REQUEST = "median() is wrong for an even number of values: median([1, 2]) raises IndexError"


@gateway_test
@pytest.mark.usefixtures("executor_on")
def test_the_coding_assistant_fixes_the_sample_bug_and_changes_files_only_with_write(gw, settings, tmp_path):
    before = sample_on_disk(APP)
    assert "ordered[middle + 1]" in before["calc.py"]  # the sample's bug is there to fix
    mark = uuid.uuid4().hex[:8]
    with listening():
        result = api.run(CODING, {"request": f"{REQUEST} ({mark})"})
    assert result.status == "succeeded", result.error
    ctx = result.context
    assert not ctx.get("errors"), ctx.get("errors")
    # The draft's prompt reached the model through the gateway with the skill line and the files.
    prompts = [a.text for a in gw.stub_server.arrivals() if mark in a.text]
    assert any(
        "AgentFlow skill: coding_assistant.draft" in p and "=== FILE calc.py ===" in p for p in prompts
    )
    assert any("AgentFlow skill: coding_assistant.review" in p and "returncode: 0" in p for p in prompts)
    patched = ctx["patch"]["files"]["calc.py"]
    assert patched["original"] == before["calc.py"]
    assert "return (ordered[middle - 1] + ordered[middle]) / 2" in patched["patched"]
    assert "middle + 1" not in patched["patched"]
    assert ctx["patch"]["applied"] == ["calc.py"] and ctx["patch"]["written"] == []
    assert ctx["tests"]["returncode"] == 0 and ctx["tests"]["passed"]
    assert "4 passed" in ctx["tests"]["stdout"]
    assert ctx["review"]["verdict"] == "OK" and "4 passed" in ctx["review"]["summary"]
    draft = ctx["meta"]["draft"]
    assert draft["run_id"] and draft["session_key"].startswith(f"agent:main:af-{draft['run_id']}-")
    # The tokens the gateway counted (read by the listener just after the run settled).
    assert draft["usage"]["input_tokens"] > 0 and draft["model"] == "stub-model"
    summary = ctx["summary"]
    assert summary["json"]["changes"] == ["calc.py"] and summary["json"]["tests"]["passed"] is True
    assert "Tests: passed (exit 0)" in summary["report"] and "review: OK" in summary["report"]
    assert sample_on_disk(APP) == before  # nothing on disk without --write
    agent_runs = Run.objects.filter(
        kind="agent.prompt", triggered_by__startswith=f"flow run {result.run_id} "
    )
    assert [r.status for r in agent_runs] == ["succeeded", "succeeded"]  # one draft, one review
    agent_spans = Span.objects.filter(run_id=result.run_id, kind="agent")
    assert agent_spans.count() == 2
    assert all(
        s.attributes["gen_ai.usage.input_tokens"] > 0 and s.attributes["gen_ai.request.model"] == "stub-model"
        for s in agent_spans
    )

    copy = tmp_path / "app"
    shutil.copytree(APP, copy, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    settings.AGENTFLOW_FLOWS_ROOTS = [*settings.AGENTFLOW_FLOWS_ROOTS, str(tmp_path)]
    with listening():
        written = api.run(CODING, {"request": REQUEST, "workspace": {"root": str(copy)}}, write=True)
    assert written.status == "succeeded", written.error
    assert written.context["patch"]["written"] == ["calc.py"]
    after = sample_on_disk(copy)
    assert after["calc.py"] == patched["patched"]
    assert after["tests/test_calc.py"] == before["tests/test_calc.py"]
    assert sample_on_disk(APP) == before


@gateway_test
@pytest.mark.usefixtures("executor_on")
def test_a_failing_review_goes_back_to_the_draft_at_most_three_times(gw, settings, tmp_path):
    """A second bug the draft does not know (average's empty case): the tests keep failing, the
    review says NG, the router sends the flow back to the draft until max_visits, then summarises."""
    copy = tmp_path / "app"
    shutil.copytree(APP, copy, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    calc = copy / "calc.py"
    calc.write_text(calc.read_text().replace("    if not values:\n        return 0.0\n", ""))
    settings.AGENTFLOW_FLOWS_ROOTS = [*settings.AGENTFLOW_FLOWS_ROOTS, str(tmp_path)]
    with listening():
        result = api.run(CODING, {"request": REQUEST, "workspace": {"root": str(copy)}})
    assert result.status == "succeeded", result.error
    ctx = result.context
    assert ctx["review"]["verdict"] == "NG" and not ctx["tests"]["passed"]
    drafts = Span.objects.filter(run_id=result.run_id, name="step draft")
    assert drafts.count() == 3  # the first draft and two more after NG, then the bound
    # The first draft fixed the median; the next ones see the fixed file and propose nothing, so
    # their patch steps fail and the flow continues past them (the dev preset).
    assert "return (ordered[middle - 1] + ordered[middle]) / 2" in ctx["workspace"]["files"]["calc.py"]
    assert [e["step"] for e in ctx["errors"]] == ["patch", "patch"]
    assert "Tests: FAILED (exit 1)" in ctx["summary"]["report"] and "review: NG" in ctx["summary"]["report"]


# --- the chat bot -----------------------------------------------------------------------------------

HISTORY = [
    {"role": "user", "text": "oldest turn one"},
    {"role": "assistant", "text": "oldest turn two"},
    {"role": "user", "text": "recent turn three"},
    {"role": "assistant", "text": "recent turn four"},
    {"role": "user", "text": "recent turn five"},
    {"role": "assistant", "text": "recent turn six"},
]


def chat_context(message: str, url: str, **more) -> dict:
    return {
        "message": message,
        "handoff_url": f"{url}/hooks/support",
        "user": {"id": "u-42", "name": "Ada", "email": "ada@example.org", "plan": "pro"},
        "chat": {"id": "c-7", "channel": "web", "history": HISTORY},
        **more,
    }


def audited(result: api.FlowResult) -> dict:
    """The conversation's audit row (its target is the flow run), as recorded."""
    entry = AuditEntry.objects.get(action="support.conversation", target_id=str(result.flow_run_id))
    return json.loads(entry.message)


@gateway_test
def test_a_question_the_knowledge_base_answers_is_answered_without_a_handoff(gw):
    mark = uuid.uuid4().hex[:8]
    message = f"I forgot my password, how can I reset it? {mark}"
    with receiver(200) as hook, listening():
        result = api.run(CHAT, chat_context(message, hook.url))
    assert result.status == "succeeded", result.error
    support = result.context["support"]
    assert support["classification"] == {"intent": "question", "greeting": "Hello Ada!"}
    assert support["faq"]["id"] == "reset-password" and support["faq"]["confidence"] >= 0.6
    assert support["answer"].startswith("Hello Ada! Open the sign-in page")
    assert support["handed_off"] is False and "handoff" not in support
    assert hook.requests == []
    assert support["history"] == [
        *HISTORY,
        {"role": "user", "text": message},
        {"role": "assistant", "text": support["answer"]},
    ]
    assert audited(result)["history"] == support["history"]
    # The history was trimmed to chat.history_limit (4) turns before it went to the agent.
    prompt = next(a.text for a in gw.stub_server.arrivals() if mark in a.text)
    assert "AgentFlow skill: chat_bot.classify" in prompt and "User: Ada (ada@example.org" in prompt
    assert "recent turn three" in prompt and "recent turn six" in prompt
    assert "oldest turn" not in prompt


@gateway_test
def test_a_greeting_is_greeted_back_without_the_knowledge_base_or_a_handoff(gw):
    with receiver(200) as hook, listening():
        result = api.run(CHAT, chat_context("hi there", hook.url))
    assert result.status == "succeeded", result.error
    support = result.context["support"]
    assert support["classification"]["intent"] == "greeting"
    assert support["answer"] == "Hello Ada! How can I help?" and support["handed_off"] is False
    assert "faq" not in support and hook.requests == []
    assert audited(result)["history"][-1] == {"role": "assistant", "text": "Hello Ada! How can I help?"}


@gateway_test
@pytest.mark.parametrize(
    ("message", "intent", "more"),
    [
        ("This is terrible, my runs are broken and nobody answers!", "complaint", {}),
        ("Do you ship to Mars by rocket?", "question", {}),
        # A known question under a threshold the run's context raises above its confidence (1.0).
        ("How do I reset my password?", "question", {"support": {"threshold": 1.01}}),
    ],
    ids=["complaint", "no-answer-in-the-knowledge-base", "below-the-run's-threshold"],
)
def test_a_complaint_or_an_unsure_answer_is_handed_off_retrying_a_503(gw, message, intent, more):
    with receiver(503, 200) as hook, listening():
        result = api.run(CHAT, chat_context(message, hook.url, **more))
    assert result.status == "succeeded", result.error
    support = result.context["support"]
    assert support["classification"]["intent"] == intent
    assert support["handoff"] == {"status": 200, "body": "ok", "attempts": 2}
    assert support["handed_off"] is True
    assert [r.path for r in hook.requests] == ["/hooks/support", "/hooks/support"]
    body = json.loads(hook.requests[-1].body)
    assert body["text"] == f"Support handoff for Ada ({intent}): {message}"
    assert body["user"]["id"] == "u-42" and body["chat"] == {"id": "c-7", "channel": "web"}
    assert body["history"][-1] == {"role": "user", "text": message}
    assert hook.requests[0].headers["content-type"] == "application/json"
    record = audited(result)
    assert record["handed_off"] is True and record["intent"] == intent
    assert record["history"][-1]["text"] == "A colleague from support will answer you here shortly."
