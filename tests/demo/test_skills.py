"""The stub model's skills (demo/skills.py): pure functions of the prompt, and the hook in
``build_reply`` that answers a skill's prompt instead of echoing it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from demo import skills
from demo.stub_model import build_reply

APP = Path(__file__).resolve().parents[2] / "examples" / "multi_agent" / "coding_assistant" / "app"


def files_block(files: dict[str, str]) -> str:
    """What the flows' ``| files`` filter renders (flows/context.py ``files_block``)."""
    blocks = []
    for path in sorted(files):
        text = files[path] if files[path].endswith("\n") else files[path] + "\n"
        blocks.append(f"=== FILE {path} ===\n{text}=== END FILE ===")
    return "\n".join(blocks)


def sample_files() -> dict[str, str]:
    return {p.relative_to(APP).as_posix(): p.read_text() for p in sorted(APP.rglob("*.py"))}


def draft_prompt(files: dict[str, str], review: str = "none") -> str:
    return (
        "AgentFlow skill: coding_assistant.draft\n"
        "Change request: median() is wrong for an even count\n"
        f"Previous review: {review}\n" + files_block(files)
    )


def test_the_skill_line_names_the_skill_anywhere_in_the_prompt():
    assert (
        skills.skill_of("hello\n  AgentFlow skill: chat_bot.classify  \nMessage: hi") == "chat_bot.classify"
    )
    assert skills.skill_of("no skill here: AgentFlow skill: inline is not a line") is None
    assert skills.reply("AgentFlow skill: no.such_skill\nhi") is None


def test_file_blocks_are_read_back_as_the_files_filter_writes_them():
    files = {"a.py": "x = 1\n", "pkg/b.txt": "two\nlines\n"}
    assert skills.parse_files("intro\n" + files_block(files) + "\ntrailer") == files


def test_the_draft_fixes_the_sample_apps_median_with_a_unified_diff():
    files = sample_files()
    assert "ordered[middle + 1]" in files["calc.py"]  # the sample still has its bug
    answer = skills.draft(draft_prompt(files))
    diff = answer.split("```diff\n", 1)[1].split("```", 1)[0]
    assert diff.startswith("--- a/calc.py\n+++ b/calc.py\n@@ ")
    assert "-    return (ordered[middle] + ordered[middle + 1]) / 2\n" in diff
    assert "+    return (ordered[middle - 1] + ordered[middle]) / 2\n" in diff
    assert "tests/test_calc.py" not in diff  # the tests are not touched
    assert "again" not in answer.split("\n", 1)[0]


def test_the_fix_really_fixes_the_sample(tmp_path):
    fixed = skills.FIXES[0].apply((APP / "calc.py").read_text())
    namespace: dict = {}
    exec(compile(fixed, "calc.py", "exec"), namespace)
    assert namespace["median"]([1, 2]) == 1.5 and namespace["median"]([4, 1, 3, 2]) == 2.5
    assert namespace["median"]([3, 1, 2]) == 2


def test_after_an_ng_review_the_draft_says_so_and_a_fixed_file_gets_no_change():
    files = sample_files()
    assert skills.draft(draft_prompt(files, review="NG the tests fail")).startswith(
        "Proposed fix (again, after the NG review):"
    )
    files["calc.py"] = skills.FIXES[0].apply(files["calc.py"])
    answer = skills.draft(draft_prompt(files, review="NG the tests fail"))
    assert answer == "No change: none of the known bug patterns occurs in calc.py, tests/test_calc.py."
    assert "---" not in answer


@pytest.mark.parametrize(
    ("result", "verdict", "summary"),
    [
        ("returncode: 0\nstdout:\n....\n4 passed in 0.03s\n", "OK", "the tests pass (4 passed in 0.03s)"),
        ("returncode: 1\nstdout:\nF...\n1 failed, 3 passed in 0.05s\n", "NG", "exit 1: 1 failed, 3 passed"),
        ("returncode: none\nstdout:\n(no output)\n", "NG", "the tests fail (exit none)"),
        ("stdout: nothing\n", "NG", "no test result in the prompt"),
    ],
)
def test_the_review_reads_the_return_code(result, verdict, summary):
    answer = json.loads(skills.review("AgentFlow skill: coding_assistant.review\nTest result:\n" + result))
    assert answer["verdict"] == verdict and summary in answer["summary"]


@pytest.mark.parametrize(
    ("message", "intent", "greeting"),
    [
        ("hi there", "greeting", "Hello Ada! How can I help?"),
        ("How do I reset my password?", "question", "Hello Ada!"),
        (
            "This is terrible, the export is broken",
            "complaint",
            "Hello Ada! I am sorry that something went wrong.",
        ),
        ("Can I talk to a person please?", "human", "Hello Ada! I will bring in a colleague."),
        ("", "question", "Hello Ada!"),
    ],
)
def test_the_classifier_finds_the_intent_from_the_message_line_only(message, intent, greeting):
    prompt = (
        "AgentFlow skill: chat_bot.classify\nUser: Ada (ada@example.org, plan pro)\n"
        f"Message: {message}\n\nConversation so far:\nuser: this is terrible\nassistant: sorry"
    )
    assert json.loads(skills.classify(prompt)) == {"intent": intent, "greeting": greeting}


def test_an_anonymous_user_is_greeted_without_a_name():
    answer = json.loads(skills.classify("User: anonymous (no e-mail)\nMessage: hello"))
    assert answer == {"intent": "greeting", "greeting": "Hello! How can I help?"}


def test_build_reply_answers_a_skill_and_echoes_everything_else():
    assert json.loads(build_reply("stub-model", "AgentFlow skill: chat_bot.classify\nMessage: hi")) == {
        "intent": "greeting",
        "greeting": "Hello! How can I help?",
    }
    assert build_reply("stub-model", "hello") == "[stub:stub-model] You said: hello"
    unknown = "AgentFlow skill: nope\nhi"
    assert build_reply("stub-model", unknown) == f"[stub:stub-model] You said: {unknown}"
