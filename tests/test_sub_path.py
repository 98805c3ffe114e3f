"""A site served under a sub-path (``/app``): the links put in messages carry it once,
whether it comes from ``BASE_URL``, ``FORCE_SCRIPT_NAME`` or the request, and a
link the app already tracks is not tracked again (also under another instance
namespace, or another language's prefix)."""

from __future__ import annotations

import re
from html import unescape

import pytest
from django.core import mail
from django.template import Context, Template
from django.test import RequestFactory
from django.urls import get_script_prefix, reverse, set_script_prefix
from django.utils import translation

from notify_tracking import notify
from notify_tracking.conf import absolute_url
from notify_tracking.models import Delivery
from tests.tracking_support import HTML, html_of

pytestmark = pytest.mark.django_db
THUNDERBIRD = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.3.0"
SITE = "http://testserver/app"


@pytest.fixture
def script_prefix():
    """Set the script prefix as Django does: at setup from FORCE_SCRIPT_NAME (a Celery
    worker), or per request from SCRIPT_NAME."""
    before = get_script_prefix()
    yield set_script_prefix
    set_script_prefix(before)


def sent_links(task, capture, html: str = HTML) -> tuple[str, list[str]]:
    mail.outbox.clear()
    with capture(execute=True):
        notify(task, ["bob@example.com"], subject="s", text="t", html=html)
    html = html_of(mail.outbox[-1])
    (pixel,) = [unescape(url) for url in re.findall(r'<img src="([^"]+)"', html)]
    clicks = [
        unescape(url) for url in re.findall(r'href="(http://testserver/[^"]*click/[^"]+)"', html)
    ]
    return pixel, clicks


# (FORCE_SCRIPT_NAME, BASE_URL, the script prefix when the message is made)
SUB_PATHS = {
    "FORCE_SCRIPT_NAME, BASE_URL without the sub-path": ("/app", "http://testserver", "/app/"),
    "FORCE_SCRIPT_NAME, BASE_URL with it": ("/app", SITE, "/app/"),
    "the server's SCRIPT_NAME, in a worker": (None, SITE, "/"),
    "the server's SCRIPT_NAME, in a request": (None, SITE, "/app/"),
}


@pytest.mark.parametrize(("force", "base_url", "prefix"), SUB_PATHS.values(), ids=SUB_PATHS)
def test_tracking_links_carry_the_sub_path_once(
    client,
    task,
    settings,
    script_prefix,
    django_capture_on_commit_callbacks,
    force,
    base_url,
    prefix,
):
    settings.FORCE_SCRIPT_NAME = force
    settings.NOTIFY_TRACKING = {
        **settings.NOTIFY_TRACKING,
        "BASE_URL": base_url,
        "SCANNER_WINDOW_SECONDS": 0,
    }
    script_prefix(prefix)
    pixel, (click,) = sent_links(task, django_capture_on_commit_callbacks)
    assert pixel.startswith(f"{SITE}/notify/open/")
    assert click.startswith(f"{SITE}/notify/click/")
    # The same link in a later message: already tracked, left as it is.
    _, (again,) = sent_links(
        task,
        django_capture_on_commit_callbacks,
        html=f'<html><body><a href="{click}">x</a></body></html>',
    )
    assert again == click
    # What the server hands Django: SCRIPT_NAME, and the rest as the path.
    script_prefix("/")
    assert (
        client.get(
            pixel.removeprefix(SITE), SCRIPT_NAME="/app", HTTP_USER_AGENT=THUNDERBIRD
        ).status_code
        == 200
    )
    assert Delivery.objects.filter(open_count=1).count() == 1


def test_the_png_badge_url_made_in_a_request_under_the_sub_path(
    task, settings, script_prefix, django_capture_on_commit_callbacks
):
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "BASE_URL": SITE}
    with django_capture_on_commit_callbacks(execute=True):
        notify(task, ["bob@example.com"], subject="s", text="t")
    script_prefix("/app/")
    request = RequestFactory().get("/", SCRIPT_NAME="/app")
    url = Template("{% load notify_tracking %}{% delivery_badge_png_url task %}").render(
        Context({"task": task, "request": request})
    )
    assert unescape(url).startswith(f"{SITE}/notify/badge/")


@pytest.mark.parametrize(
    ("prefix", "path", "expected"),
    [
        ("/", "/tasks/1/", f"{SITE}/tasks/1/"),  # a worker: the sub-path from BASE_URL
        ("/app/", "/app/tasks/1/", f"{SITE}/tasks/1/"),  # reverse() under the prefix
        ("/app/", "/tasks/1/", f"{SITE}/tasks/1/"),  # a path written by hand
        ("/", "tasks/1/", f"{SITE}/tasks/1/"),  # a relative one
    ],
)
def test_a_target_url_gets_the_sub_path_once(settings, script_prefix, prefix, path, expected):
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "BASE_URL": SITE + "/"}
    script_prefix(prefix)
    assert absolute_url(path) == expected


def test_a_sub_path_that_needs_quoting_is_not_repeated(settings, script_prefix):
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "BASE_URL": "http://testserver/трекер"}
    script_prefix("/трекер/")
    path = reverse("notify_tracking:open", args=["t"])
    assert path.startswith("/%D1%82%D1%80")  # reverse() quotes the prefix
    assert absolute_url(path) == "http://testserver/трекер/notify/open/t.gif"


def test_a_protocol_relative_url_keeps_its_host(settings):
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "BASE_URL": "https://testserver/app"}
    assert absolute_url("//cdn.example.com/x") == "https://cdn.example.com/x"


def test_a_tracked_link_is_known_under_another_instance_namespace(
    task, settings, django_capture_on_commit_callbacks
):
    settings.ROOT_URLCONF = "tests.urls_namespaced"
    _, (click,) = sent_links(task, django_capture_on_commit_callbacks)
    _, (again,) = sent_links(
        task,
        django_capture_on_commit_callbacks,
        html=f'<html><body><a href="{click}">x</a></body></html>',
    )
    assert again == click


def test_a_tracked_link_made_in_another_language_is_known(
    task, settings, django_capture_on_commit_callbacks
):
    """Under i18n_patterns a link carries the language active when it was made."""
    settings.ROOT_URLCONF = "tests.urls_i18n"
    settings.LANGUAGES = [("en", "English"), ("ru", "Russian")]
    with translation.override("en"):
        _, (click,) = sent_links(task, django_capture_on_commit_callbacks)
    assert click.startswith("http://testserver/en/notify/click/")
    with translation.override("ru"):
        _, (again,) = sent_links(
            task,
            django_capture_on_commit_callbacks,
            html=f'<html><body><a href="{click}">x</a></body></html>',
        )
    assert again == click
