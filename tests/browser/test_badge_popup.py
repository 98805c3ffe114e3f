"""A person's view: the demo's task page shows badges; a click or a key opens the popup.

Headless Chromium (Debian's) on the demo served by its own runserver. Screenshots go
to test-artifacts/ (git-ignored).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .chromium import chromium_page, enforce_csp

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TASK_TITLE = "Login page rejects valid passwords"
DEMO_ACCOUNT = ("alice", "demo")  # a seeded demo user (the login page shows it)


def log_in(page, site: str) -> None:
    username, password = DEMO_ACCOUNT
    page.goto(f"{site}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("form button[type=submit]")
    page.wait_for_url(f"{site}/")


def open_task(page, site: str) -> None:
    log_in(page, site)
    page.get_by_role("link", name=TASK_TITLE).click()
    page.wait_for_selector("article.comment")


def is_focused(page, selector_or_handle) -> bool:
    return page.evaluate("(element) => document.activeElement === element", selector_or_handle)


def save_popup_screenshot(page, badge, name: str) -> Path:
    """A picture of the badge with its open popup, and of the whole page."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}-page.png"), full_page=True)
    box = badge.bounding_box()
    popup = badge.locator("[data-nt-popup]").bounding_box()
    left, top = max(box["x"] - 300, 0), max(box["y"] - 70, 0)
    right = max(box["x"] + box["width"], popup["x"] + popup["width"]) + 24
    bottom = popup["y"] + popup["height"] + 24
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(
        path=str(path), clip={"x": left, "y": top, "width": right - left, "height": bottom - top}
    )
    return path


def test_comment_badge_popup_by_mouse_and_keyboard(demo_site):
    with chromium_page() as page:
        enforce_csp(page)  # the badge needs no inline code: it works under a strict CSP
        open_task(page, demo_site)

        badges = page.locator("[data-nt-badge]")
        # the task and each of its two seeded comments
        assert badges.count() == 3
        first_comment = page.locator("article.comment").first
        badge = first_comment.locator("[data-nt-badge]")
        button = badge.locator("button[data-nt-toggle]")
        popup = badge.locator("[data-nt-popup]")
        label = button.get_attribute("aria-label")
        # Bob clicked; Dana's mailbox is full; Carol's copy over the webhook waits for
        # the worker (none here)
        assert label == "Notification status: Read by 1 of 4; Error (1 of 4)"
        assert popup.is_hidden()

        button.click()

        assert popup.is_visible()
        assert button.get_attribute("aria-expanded") == "true"
        assert is_focused(page, popup.element_handle())
        recipients = popup.locator("[data-nt-recipient]")
        assert recipients.count() == 4
        text = popup.inner_text()
        for expected in (
            "Bob Chen",
            "bob@example.com",
            "Clicked",
            "Carol Diaz",
            "Sent",
            "via Webhook",
            "Queued",
            "dana@vendor.example",
            "Bounced",
            "Why it failed: 552 5.2.2 Mailbox full: dana@vendor.example is over its quota",
            f"{demo_site}/tasks/1/#comment-1",
        ):
            assert expected in text, expected
        shot = save_popup_screenshot(page, badge, "badge-popup")
        assert shot.stat().st_size > 5_000

        page.keyboard.press("Escape")

        assert popup.is_hidden()
        assert button.get_attribute("aria-expanded") == "false"
        assert is_focused(page, button.element_handle())

        page.keyboard.press("Enter")
        assert popup.is_visible()
        page.keyboard.press("Escape")
        assert popup.is_hidden()
        page.keyboard.press("Space")
        assert popup.is_visible()
        page.mouse.click(5, 5)  # outside: closes
        assert popup.is_hidden()
        assert page.errors == []


def test_only_one_popup_at_a_time_and_refresh(demo_site):
    with chromium_page() as page:
        open_task(page, demo_site)
        comments = page.locator("article.comment")
        first = comments.nth(0).locator("[data-nt-badge]")
        second = comments.nth(1).locator("[data-nt-badge]")

        first.locator("[data-nt-toggle]").click()
        second.locator("[data-nt-toggle]").click()

        assert first.locator("[data-nt-popup]").is_hidden()
        assert second.locator("[data-nt-popup]").is_visible()
        assert "Alice Martin" in second.inner_text()
        assert "1 possibly automatic open" in second.inner_text()

        # Carol's delivery can still be read: the popup offers a refresh
        with page.expect_response(lambda response: "/badge/" in response.url) as answer:
            second.locator("[data-nt-refresh]").click()
        assert answer.value.status == 200
        refreshed = page.locator("article.comment").nth(1).locator("[data-nt-badge]")
        assert refreshed.locator("[data-nt-popup]").is_visible()
        assert "Alice Martin" in refreshed.inner_text()
        assert page.errors == []
