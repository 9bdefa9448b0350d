"""Browser-test helpers shared by the Playwright tests (the fixtures live in tests/browser/conftest.py)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


def login(page, base_url: str, username: str, password: str) -> None:
    page.goto(f"{base_url}/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/")


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def off_loop(fn, *args):
    """Run ``fn`` in a worker thread: Playwright's loop owns this one, and code that uses
    async_to_sync (the broadcast module) cannot run beside it."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


def assert_tables_fit(page, name: str) -> None:
    """On a desktop no table scrolls inside its box either: its columns wrap to fit (a phone may
    scroll a wide table; ``assert_fits`` allows that)."""
    scrolling = page.evaluate(
        """() => [...document.querySelectorAll("main .table-wrap")]
            .filter(el => el.scrollWidth > el.clientWidth + 1)
            .map(el => (el.querySelector("table") || el).id || el.className)"""
    )
    assert not scrolling, f"{name}: these tables scroll sideways inside their box: {scrolling}"


def assert_fits(page, name: str, width: int, scheme: str) -> None:
    """Nothing scrolls sideways: neither the document nor the body is wider than the window."""
    scroll_width, inner_width = page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
    assert inner_width == width
    assert scroll_width <= inner_width, (
        f"{name} scrolls sideways at {width} px in {scheme}: {scroll_width} px"
    )
    # Nor is anything cut off by a box that hides its overflow (only the wide tables, the chat log
    # and diffs scroll, inside their own box; an ellipsis is a deliberate cut).
    clipped = page.evaluate(
        """() => [...document.querySelectorAll("main, main *")].filter(el => {
            if (el.closest(".table-wrap, .chat-log, .diff, .sr-only")) return false;
            if (el.getBoundingClientRect().right > window.innerWidth + 0.5) return true;
            const style = getComputedStyle(el);
            return ["hidden", "clip"].includes(style.overflowX) && style.textOverflow !== "ellipsis"
                && el.scrollWidth > el.clientWidth + 1;
        }).map(el => el.tagName.toLowerCase() + "." + [...el.classList].join("."))"""
    )
    assert not clipped, f"{name} at {width} px in {scheme}: cut off at the right: {clipped[:8]}"


def page_checked(page, name: str, width: int, scheme: str) -> Path:
    """A page's layout checks and its screenshot: nothing scrolls sideways or is cut off, at a
    desktop width no table scrolls inside its box either; saved as ``{name}-{width}-{scheme}``."""
    assert_fits(page, name, width, scheme)
    if width >= 1400:
        assert_tables_fit(page, name)
    return screenshot(page, f"{name}-{width}-{scheme}")
