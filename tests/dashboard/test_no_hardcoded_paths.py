"""No app path is written by hand in a template or in our JavaScript: templates use {% url %} (or a
tag such as {% live_socket_url %}), scripts take URLs from the markup (data-fragment). A path
written out breaks silently when a route moves or the site runs under a prefix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "templates").rglob("*.html")) + sorted((ROOT / "static" / "js").rglob("*.js"))

# An attribute whose value starts with "/", or a quoted string that starts like one of our paths
# ("/?agent=…", "/fragments/…", "/ws/…").
ATTRIBUTE = re.compile(r"""\b(?:href|src|action|hx-[a-z]+|ws-connect|data-[a-z-]+)\s*=\s*["']/""")
QUOTED = re.compile(
    r"""["'`]/(?:\?|fragments/|ws/|gateways/|batches/|api/|admin/|accounts/|healthz|metrics|static/)"""
)


def hardcoded(text: str) -> list[str]:
    return [
        f"line {n}: {line.strip()[:120]}"
        for n, line in enumerate(text.splitlines(), 1)
        if ATTRIBUTE.search(line) or QUOTED.search(line)
    ]


@pytest.mark.parametrize(
    "snippet",
    [
        '<a href="/?agent={{ a|urlencode }}">',
        '<body ws-connect="/ws/dashboard/">',
        'url = "/fragments/gateways/" + id + "/health/";',
        "fetch('/?status=active')",
        '<form action="/gateways/1/abort">',
        '<div hx-get="/fragments/gateways/1/">',
        '<div data-fragment="/fragments/gateways/1/">',
    ],
)
def test_the_check_catches_a_written_out_path(snippet):
    assert hardcoded(snippet)


@pytest.mark.parametrize(
    "snippet",
    [
        "<a href=\"{% url 'dashboard:overview' %}?agent={{ a|urlencode }}\">",
        '<a href="?before={{ older }}">',
        '<a href="#main">',
        '<polyline points="0,0 1,1"/>',
        'el.querySelector(":scope > .status")',
    ],
)
def test_the_check_leaves_urls_from_the_router_alone(snippet):
    assert not hardcoded(snippet)


def test_there_are_sources_to_check():
    names = {p.name for p in SOURCES}
    assert {"base.html", "overview.html", "core.js", "fleet.js"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_template_or_script_writes_an_app_path(path):
    found = hardcoded(path.read_text())
    assert not found, f"{path.relative_to(ROOT)} writes app paths by hand:\n" + "\n".join(found)
