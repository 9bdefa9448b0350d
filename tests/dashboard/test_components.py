"""The shared components (templates/components/ and dashboard/templatetags/ui.py) rendered on
their own and where the pages use them: status, banner, empty state, confirm button, pagination."""

from __future__ import annotations

import json

import pytest
from django.middleware.csrf import get_token
from django.template import Context, Template, TemplateSyntaxError
from django.template.loader import render_to_string
from django.test import RequestFactory

from dashboard.routing import WEBSOCKET_PATH
from dashboard.templatetags import ui
from fleet.models import AgentSession, Gateway
from scheduler.models import Alert, BatchRun
from tests.support.factories import make_batch_run, make_gateway
from tests.support.html import dom


def render(source: str, request=None, **context) -> str:
    if request is not None:
        context["request"] = request
    return Template("{% load ui %}" + source).render(Context(context))


# --- status -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(ui.STATUS_CHOICES))
def test_every_state_of_every_kind_has_a_shape(kind):
    choices = ui.STATUS_CHOICES[kind]
    assert set(ui.SHAPES[kind]) == set(choices.values), (
        f"{kind}: states without a shape (or shapes of no state)"
    )
    assert set(ui.SHAPES[kind].values()) <= {ui.CIRCLE, ui.DIAMOND, ui.SQUARE, ui.RING}


@pytest.mark.parametrize(
    ("value", "kind", "label", "shape"),
    [
        ("connected", "gateway", "Connected", "circle"),
        ("read_only", "gateway", "Read-only", "diamond"),
        ("auth_failed", "gateway", "Authentication failed", "square"),
        ("unknown", "gateway", "Not checked yet", "ring"),
        ("active", "session", "Active", "circle"),
        ("idle", "session", "Idle", "diamond"),
        ("offline", "session", "Offline", "ring"),
        ("ok", "run", "OK", "circle"),
        ("error", "run", "Error", "square"),
        ("skipped", "run", "Skipped", "ring"),
    ],
)
def test_a_status_shows_the_models_label_and_the_states_shape(value, kind, label, shape):
    badge = dom(render("{% status value kind %}", value=value, kind=kind)).find("span", cls="status")
    assert badge.attrs["data-kind"] == kind and badge.attrs["data-status"] == value
    assert f"shape-{shape}" in badge.attrs["class"].split()
    assert badge.find("span", cls="label").text == label
    assert (
        badge.find("span", cls="shape").attrs["aria-hidden"] == "true"
    )  # the text says it; the shape repeats it


def test_a_status_of_a_model_takes_its_kind_from_the_model():
    gateway = Gateway(status=Gateway.Status.INCOMPATIBLE)
    run = BatchRun(status=BatchRun.Status.OK)
    session = AgentSession(status=AgentSession.Status.IDLE)
    page = dom(
        render(
            "{% status gateway %}{% status run %}{% status session %}",
            gateway=gateway,
            run=run,
            session=session,
        )
    )
    assert [(b.attrs["data-kind"], b.text) for b in page.find_all("span", cls="status")] == [
        ("gateway", "Incompatible"),
        ("run", "OK"),
        ("session", "Idle"),
    ]


def test_a_status_the_choices_do_not_know_is_shown_as_it_is_as_a_ring():
    badge = dom(render('{% status "paused" "session" %}')).find("span", cls="status")
    assert badge.text == "paused" and "shape-ring" in badge.attrs["class"]
    with pytest.raises(TemplateSyntaxError, match="unknown kind"):
        render('{% status "ok" "nonsense" %}')


def test_the_page_gets_the_same_shape_table_the_server_draws_with():
    script = dom(render("{% status_shapes %}")).find("script", id="status-shapes")
    assert script.attrs["type"] == "application/json"
    assert json.loads(script.text) == {kind: dict(shapes) for kind, shapes in ui.SHAPES.items()}


def test_the_socket_url_is_the_routed_path():
    assert render("{% live_socket_url %}") == "/" + WEBSOCKET_PATH


# --- banner ---------------------------------------------------------------------------------------------


def test_a_banner_has_its_level_role_title_and_action():
    html = render_to_string(
        "components/banner.html",
        {
            "level": "warning",
            "role": "alert",
            "title": "Warning",
            "text": "Cleanup <failed>",
            "action_url": "/x",
            "action_label": "Look",
        },
    )
    banner = dom(html).find("p", cls="alert")
    assert "alert-warning" in banner.attrs["class"] and banner.attrs["role"] == "alert"
    assert banner.find("strong").text == "Warning:"
    assert "Cleanup <failed>" in banner.text and "<failed>" not in html  # escaped
    assert banner.find("a").attrs["href"] == "/x" and banner.find("a").text == "Look"


def test_a_plain_banner_is_an_info_status_with_only_its_text():
    banner = dom(render_to_string("components/banner.html", {"text": "Saved."})).find("p", cls="alert")
    assert banner.attrs["class"] == "alert alert-info" and banner.attrs["role"] == "status"
    assert banner.text == "Saved." and not banner.has("a") and not banner.has("strong")


def test_open_alerts_and_flash_messages_share_the_banner_slot(client, operator, db):
    Alert.objects.create(level=Alert.Level.WARNING, source="cleanup", message="History cleanup failed")
    client.force_login(operator)
    page = dom(client.get("/"))
    slot = page.find("div", id="banners")
    (alert,) = slot.find_all("p", cls="alert")
    assert alert.attrs["role"] == "alert" and "alert-warning" in alert.attrs["class"]
    assert alert.find("strong").text == "Warning:" and "History cleanup failed" in alert.text
    assert alert.find("span", cls="muted").text == "first seen just now"  # then last seen, times
    # The live "new alert" notice is the same component, kept inert until alert.raised.
    notice = page.find("template", id="alert-live-template").find("p", cls="alert")
    assert notice.attrs["id"] == "alert-live" and notice.attrs["role"] == "alert"
    assert "A new alert was raised." in notice.text and notice.has("a")
    assert not page.has("p", id="alert-live")  # not on the page until a script places it


# --- empty state -------------------------------------------------------------------------------------------


def test_an_empty_state_has_a_title_a_hint_and_an_optional_action():
    full = dom(
        render_to_string(
            "components/empty_state.html",
            {
                "title": "Nothing yet.",
                "hint": "It fills up.",
                "action_url": "/add",
                "action_label": "Add one",
            },
        )
    ).find("div", cls="empty-state")
    assert full.find("p", cls="empty-title").text == "Nothing yet."
    assert full.find("p", cls="muted").text == "It fills up."
    assert full.find("a").attrs["href"] == "/add" and full.find("a").text == "Add one"
    bare = dom(render_to_string("components/empty_state.html", {"title": "Nothing yet."})).find(
        "div", cls="empty-state"
    )
    assert not bare.has("a") and not bare.has("p", cls="muted")


def test_no_gateway_is_an_empty_state_with_the_admin_link_for_staff_only(client, operator, admin_user, db):
    client.force_login(operator)
    empty = dom(client.get("/")).find("div", cls="empty-state")
    assert empty.find("p", cls="empty-title").text == "No gateway is registered yet."
    assert not empty.has("a")
    client.force_login(admin_user)
    link = dom(client.get("/")).find("div", cls="empty-state").find("a")
    assert link.attrs["href"] == "/admin/fleet/gateway/add/"


def test_no_runs_is_an_empty_state(client, operator, db):
    client.force_login(operator)
    recent = dom(client.get("/batches/")).find_all("section", cls="card")[1]
    assert recent.find("div", cls="empty-state").find("p", cls="empty-title").text == "No runs recorded yet."
    assert not recent.has("nav", cls="pagination")


# --- confirm button ---------------------------------------------------------------------------------------


def confirm_form(**context):
    request = RequestFactory().get("/")
    token = get_token(request)
    html = render_to_string("components/confirm_button.html", context, request=request)
    return dom(html).find("form"), token


def test_a_confirm_button_is_a_plain_post_with_csrf_a_named_action_and_a_prompt():
    form, token = confirm_form(
        action="/stop", label="Stop", name="action", value="stop", confirm="Stop everything?"
    )
    assert form.attrs["method"] == "post" and form.attrs["action"] == "/stop"  # works without JavaScript
    assert form.find("input", name="csrfmiddlewaretoken").attrs["value"]
    assert token  # the token the form carries is the request's
    button = form.find("button")
    assert button.attrs["type"] == "submit" and button.text == "Stop"
    assert button.attrs["name"] == "action" and button.attrs["value"] == "stop"
    assert form.attrs["hx-confirm"] == "Stop everything?"
    # No target: htmx boosts the form (asks, then posts and follows the redirect like the browser).
    assert form.attrs["hx-boost"] == "true" and "hx-post" not in form.attrs
    assert "disabled" not in button.attrs


def test_a_confirm_button_can_target_a_fragment_and_be_disabled():
    form, _ = confirm_form(
        action="/abort", label="Abort run", hx_target="#result", disabled=True, button_id="abort"
    )
    assert form.attrs["hx-post"] == "/abort" and form.attrs["hx-target"] == "#result"
    assert "hx-confirm" not in form.attrs and "hx-boost" not in form.attrs
    button = form.find("button", id="abort")
    assert "disabled" in button.attrs and "name" not in button.attrs


# --- pagination -------------------------------------------------------------------------------------------


def test_pagination_keeps_the_query_string(db):
    gateway = make_gateway()
    BatchRun.objects.bulk_create(
        BatchRun(batch="BATCH-001", status="ok", scope="gateway", target_id=gateway.pk) for _ in range(5)
    )
    from django.core.paginator import Paginator

    page = Paginator(BatchRun.objects.all(), 2).get_page(2)
    request = RequestFactory().get("/batches/", {"status": "ok", "batch": "BATCH-001", "page": "2"})
    nav = dom(render_to_string("components/pagination.html", {"page": page, "request": request})).find("nav")
    prev, nxt = nav.find("a", rel="prev"), nav.find("a", rel="next")
    assert prev.attrs["href"] == "?status=ok&batch=BATCH-001&page=1"
    assert nxt.attrs["href"] == "?status=ok&batch=BATCH-001&page=3"
    assert "Page 2 of 3" in nav.text
    first = Paginator(BatchRun.objects.all(), 2).get_page(1)
    nav = dom(render_to_string("components/pagination.html", {"page": first, "request": request})).find("nav")
    assert not nav.has("a", rel="prev") and nav.has("a", rel="next")
    single = Paginator(BatchRun.objects.all(), 10).get_page(1)
    assert "<nav" not in render_to_string("components/pagination.html", {"page": single, "request": request})


def test_the_recent_runs_paginate(client, operator, db):
    from dashboard.views.batches import RUNS_PER_PAGE

    gateway = make_gateway()
    BatchRun.objects.bulk_create(
        BatchRun(batch="BATCH-001", status="ok", scope="gateway", target_id=gateway.pk)
        for _ in range(RUNS_PER_PAGE + 1)
    )
    make_batch_run("BATCH-004", status="error", error="boom")
    client.force_login(operator)
    # Identical outcomes are folded into one row; ?each=1 lists every run.
    folded = dom(client.get("/batches/", {"batch": "BATCH-001"})).find_all("section", cls="card")[1]
    assert len(folded.find("tbody").find_all("tr")) == 1
    assert f"×{RUNS_PER_PAGE}" in folded.find("tbody").text
    recent = dom(client.get("/batches/", {"batch": "BATCH-001", "each": "1"})).find_all(
        "section", cls="card"
    )[1]
    assert len(recent.find("tbody").find_all("tr")) == RUNS_PER_PAGE
    assert recent.find("a", rel="next").attrs["href"] == "?batch=BATCH-001&each=1&page=2"
    second = dom(client.get("/batches/", {"batch": "BATCH-001", "each": "1", "page": "2"})).find_all(
        "section", cls="card"
    )[1]
    assert len(second.find("tbody").find_all("tr")) == 1 and second.has("a", rel="prev")
    assert "boom" not in second.text  # the filter holds on every page
    # A page number out of range or not a number is a page, not an error.
    assert client.get("/batches/", {"page": "99"}).status_code == 200
    assert client.get("/batches/", {"page": "x"}).status_code == 200


# --- icons, avatars, token meter ------------------------------------------------------------------------


def test_an_icon_is_the_vendored_svg_inlined_hidden_from_screen_readers_in_the_text_colour():
    svg = dom(render('{% icon "bot" %}')).find("svg")
    assert svg.attrs["class"] == "icon icon-bot" and svg.attrs["aria-hidden"] == "true"
    assert svg.attrs["stroke"] == "currentColor" and "width" not in svg.attrs
    labelled = dom(render('{% icon "bell" "Alerts <now>" %}')).find("svg")
    assert labelled.attrs["role"] == "img" and labelled.attrs["aria-label"] == "Alerts <now>"
    assert "<now>" not in render('{% icon "bell" "Alerts <now>" %}')  # escaped
    with pytest.raises(TemplateSyntaxError, match="no vendored icon"):
        render('{% icon "../LICENSE" %}')


def test_every_icon_the_templates_use_is_vendored_with_its_licence():
    import re
    from pathlib import Path

    root = Path(ui.ICON_DIR).parents[2]
    used = set()
    for template in (root / "templates").rglob("*.html"):
        used |= set(re.findall(r'{% icon "([a-z0-9-]+)"', template.read_text()))
    used |= {name for _, name in ui.NAV_SOON}
    assert used and all((ui.ICON_DIR / f"{name}.svg").is_file() for name in used), used
    assert "ISC" in (ui.ICON_DIR / "LICENSE").read_text()


@pytest.mark.parametrize(
    ("name", "agent_id", "initials"),
    [
        ("Research Bot", "r", "RB"),
        ("", "writer", "WR"),
        ("agent-07", "a", "A0"),
        ("🦀", "main", "MA"),
        ("", "", "?"),
    ],
)
def test_an_avatar_always_has_initials_and_the_emoji_only_as_a_badge(name, agent_id, initials):
    from fleet.models import Agent

    agent = Agent(name=name, agent_id=agent_id, emoji="🦀")
    avatar = dom(render("{% avatar agent %}", agent=agent)).find("span", cls="avatar")
    assert avatar.find("span", cls="initials").text == initials
    assert avatar.find("span", cls="avatar-emoji").text == "🦀"
    assert avatar.attrs["aria-hidden"] == "true"
    # The colour follows the id, the same on every page and process.
    again = dom(render("{% avatar agent %}", agent=agent)).find("span", cls="avatar")
    assert [c for c in avatar.attrs["class"].split() if c.startswith("hue-")] == [
        c for c in again.attrs["class"].split() if c.startswith("hue-")
    ]
    plain = dom(render("{% avatar agent %}", agent=Agent(name="Plain", agent_id="p")))
    assert not plain.has("span", cls="avatar-emoji")


def test_tokens_show_against_the_context_window_as_a_bar_and_numbers():
    html = render_to_string("components/tokens.html", {"used": 12_300, "window": 200_000, "percent": 6})
    tokens = dom(html).find("span", cls="tokens")
    assert " ".join(tokens.find("span", cls="tokens-text").text.split()) == "12.3k / 200k context tokens"
    assert tokens.attrs["title"] == "12300 of 200000 context tokens (6 %)"
    assert tokens.find("rect", cls="meter-fill").attrs["width"] == "6"
    high = dom(
        render_to_string("components/tokens.html", {"used": 171_000, "window": 200_000, "percent": 86})
    )
    assert "tokens-high" in high.find("span", cls="tokens").attrs["class"]
    no_window = dom(render_to_string("components/tokens.html", {"used": 900, "window": 0, "percent": 0}))
    assert no_window.find("span", cls="tokens-text").text == "900 tokens" and not no_window.has("svg")
