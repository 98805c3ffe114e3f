"""Debian's Chromium, driven by Playwright, for the browser tests."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

#: No inline script, no inline style, nothing from elsewhere.
STRICT_CSP = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """Debian's Chromium; a browser test fails (never skips) without it.

    Called in the test's body, so that a missing Chromium is a test failure with
    this message, not a setup error.
    """
    path = os.environ.get("NOTIFY_TRACKING_CHROMIUM") or shutil.which("chromium")
    if not path or not Path(path).exists():
        pytest.fail(
            "Chromium is not installed: the browser tests need it. "
            "Install it with `apt-get install -y chromium` (Debian), or set "
            "NOTIFY_TRACKING_CHROMIUM to a Chromium binary.",
            pytrace=False,
        )
    return path


@contextlib.contextmanager
def chromium_page() -> Iterator[Any]:
    """A page of a fresh headless Chromium.

    ``page.errors`` collects the page's script errors, console errors (among them
    Content-Security-Policy violations) and failed requests (but a missing favicon).
    """
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.errors = []
            page.on("pageerror", lambda error: page.errors.append(str(error)))
            page.on("response", lambda response: _record_failure(page, response))
            page.on("console", lambda message: _record_console_error(page, message))
            yield page
        finally:
            browser.close()


def _record_failure(page: Any, response: Any) -> None:
    if response.status >= 400 and not response.url.endswith("/favicon.ico"):
        page.errors.append(f"{response.status} {response.url}")


def _record_console_error(page: Any, message: Any) -> None:
    # A failed request is recorded with its URL by _record_failure.
    if message.type == "error" and not message.text.startswith("Failed to load resource"):
        page.errors.append(message.text)


def enforce_csp(page: Any, policy: str = STRICT_CSP) -> None:
    """Serve every page of the site with ``policy``: inline scripts and styles would break."""

    def add_policy(route: Any) -> None:
        if route.request.resource_type != "document" or route.request.method != "GET":
            route.continue_()
            return
        response = route.fetch(max_redirects=0)
        route.fulfill(
            response=response,
            headers={**response.headers, "content-security-policy": policy},
        )

    page.route("**/*", add_policy)
