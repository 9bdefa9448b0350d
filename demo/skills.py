"""Canned "skills" of the stub model: deterministic answers to the example flows' prompts.

A prompt with a line ``AgentFlow skill: <name>`` is answered as that skill instead of the echo
(``demo.stub_model.build_reply``), so the example flows (examples/multi_agent/) really run end to
end on the demo gateway: the coding assistant's draft gets a unified diff that fixes the sample
app's bug, its review reads the test result, the chat bot's classifier gets an intent.

Pure functions of the prompt text (no I/O, no randomness), unit-tested in tests/demo/test_skills.py.

* ``coding_assistant.draft``: reads the ``=== FILE path ===`` … ``=== END FILE ===`` blocks (the
  flows' ``files`` filter), applies the first :data:`FIXES` rule that matches a file and answers
  with a ``difflib`` unified diff (``--- a/path`` / ``+++ b/path``) in a fenced block; a prompt
  saying the last review was NG gets the same fix of what it is shown.
* ``coding_assistant.review``: ``{"verdict": "OK", "summary": …}`` when the prompt has a line
  ``returncode: 0``, else ``"NG"``.
* ``chat_bot.classify``: ``{"intent": greeting | question | complaint | human, "greeting": …}``
  from the keywords of the ``Message:`` line, the greeting addressed to the ``User:`` line's name.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FIXES", "SKILLS", "Fix", "classify", "draft", "parse_files", "reply", "review", "skill_of"]

_SKILL_LINE = re.compile(r"^[ \t]*AgentFlow skill:[ \t]*([A-Za-z0-9_.-]+)[ \t]*$", re.M)
_FILE_BLOCK = re.compile(r"^=== FILE (?P<path>[^\n]+?) ===\n(?P<body>.*?)^=== END FILE ===$", re.M | re.S)


def skill_of(text: str) -> str | None:
    """The skill a prompt asks for (its first ``AgentFlow skill: <name>`` line), or ``None``."""
    match = _SKILL_LINE.search(text)
    return match.group(1) if match else None


def parse_files(text: str) -> dict[str, str]:
    """``{path: content}`` of the ``=== FILE path ===`` … ``=== END FILE ===`` blocks in ``text``."""
    return {m.group("path").strip(): m.group("body") for m in _FILE_BLOCK.finditer(text)}


# --- coding_assistant.draft ------------------------------------------------------------------------


@dataclass(frozen=True)
class Fix:
    """A known bug pattern: a line matching ``pattern`` becomes ``replacement`` (``re.sub``)."""

    name: str
    pattern: re.Pattern[str]
    replacement: str
    explanation: str

    def apply(self, content: str) -> str:
        return self.pattern.sub(self.replacement, content)


FIXES: tuple[Fix, ...] = (
    # The sample app's bug (examples/multi_agent/coding_assistant/app/calc.py): the even case of
    # a median averages the upper middle with the element after it instead of the one before it.
    Fix(
        "median-upper-neighbour",
        re.compile(r"\((?P<seq>\w+)\[(?P<mid>\w+)\] \+ (?P=seq)\[(?P=mid) \+ 1\]\) / 2"),
        r"(\g<seq>[\g<mid> - 1] + \g<seq>[\g<mid>]) / 2",
        "the even case of the median averaged the upper middle value with the one after it "
        "(an off-by-one: IndexError for two values, a wrong value otherwise); it now averages the "
        "two middle values",
    ),
)


def _diff(path: str, before: str, after: str) -> str:
    def lines(text: str) -> list[str]:
        return [ln if ln.endswith("\n") else ln + "\n" for ln in text.splitlines(keepends=True)]

    return "".join(difflib.unified_diff(lines(before), lines(after), f"a/{path}", f"b/{path}"))


def draft(prompt: str) -> str:
    files = parse_files(prompt)
    diffs, reasons = [], []
    for path in sorted(files):
        content = files[path]
        for fix in FIXES:
            fixed = fix.apply(content)
            if fixed != content:
                diffs.append(_diff(path, content, fixed))
                reasons.append(f"{path}: {fix.explanation}.")
                break
    if not diffs:
        shown = ", ".join(sorted(files)) or "no files"
        return f"No change: none of the known bug patterns occurs in {shown}."
    again = " (again, after the NG review)" if _previous_review(prompt).upper().startswith("NG") else ""
    return "Proposed fix" + again + ":\n" + "\n".join(reasons) + "\n\n```diff\n" + "".join(diffs) + "```\n"


def _previous_review(prompt: str) -> str:
    """The verdict and summary on a ``Previous review:`` line (the flow's NG loop), or ``""``."""
    return _line(prompt, "Previous review")


# --- coding_assistant.review -----------------------------------------------------------------------

_RETURNCODE = re.compile(r"^[ \t]*returncode:[ \t]*(\S+)[ \t]*$", re.M)
_PYTEST_SUMMARY = re.compile(r"^.*\b\d+ (?:passed|failed|errors?)\b.*$", re.M)


def review(prompt: str) -> str:
    code = _RETURNCODE.search(prompt)
    summaries = _PYTEST_SUMMARY.findall(prompt)
    outcome = summaries[-1].strip(" =") if summaries else ""
    if code is None:
        verdict, summary = "NG", "no test result in the prompt (no 'returncode:' line)"
    elif code.group(1) == "0":
        verdict, summary = "OK", f"the tests pass ({outcome or 'exit 0'}); the patch fixes the request"
    else:
        verdict, summary = "NG", f"the tests fail (exit {code.group(1)}{': ' + outcome if outcome else ''})"
    return json.dumps({"verdict": verdict, "summary": summary})


# --- chat_bot.classify -----------------------------------------------------------------------------

HUMAN_WORDS = frozenset(
    {"human", "person", "someone", "representative", "operator", "staff", "agent", "people"}
)
COMPLAINT_WORDS = frozenset(
    {
        "complaint",
        "complain",
        "angry",
        "terrible",
        "awful",
        "broken",
        "worst",
        "unacceptable",
        "refund",
        "disappointed",
        "furious",
        "useless",
    }
)
GREETING_WORDS = frozenset(
    {
        "hi",
        "hello",
        "hey",
        "hiya",
        "morning",
        "afternoon",
        "evening",
        "good",
        "there",
        "thanks",
        "thank",
        "you",
    }
)


def _line(prompt: str, label: str) -> str:
    match = re.search(rf"^[ \t]*{label}:[ \t]*(.*)$", prompt, re.M)
    return match.group(1).strip() if match else ""


def classify(prompt: str) -> str:
    message = _line(prompt, "Message")
    words = set(re.findall(r"[a-z]+", message.lower()))
    if words & HUMAN_WORDS:
        intent = "human"
    elif words & COMPLAINT_WORDS:
        intent = "complaint"
    elif words and words <= GREETING_WORDS:
        intent = "greeting"
    else:
        intent = "question"
    name = _line(prompt, "User").split(" (")[0].strip()
    hello = f"Hello {name}!" if name and name.lower() not in ("anonymous", "unknown") else "Hello!"
    greeting = {
        "complaint": f"{hello} I am sorry that something went wrong.",
        "human": f"{hello} I will bring in a colleague.",
        "greeting": f"{hello} How can I help?",
    }.get(intent, hello)
    return json.dumps({"intent": intent, "greeting": greeting})


# --- the table ---------------------------------------------------------------------------------------

SKILLS: dict[str, Callable[[str], str]] = {
    "coding_assistant.draft": draft,
    "coding_assistant.review": review,
    "chat_bot.classify": classify,
}


def reply(prompt: str) -> str | None:
    """The skill's answer to ``prompt``, or ``None`` when it names no skill (or an unknown one,
    which gets the ordinary echo, so a typo shows in the transcript)."""
    name = skill_of(prompt)
    handler = SKILLS.get(name) if name else None
    return handler(prompt) if handler else None
