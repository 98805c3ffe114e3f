"""{% delivery_badge %} and friends: accessible markup, no inline code, batched queries."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import AnonymousUser, Permission
from django.template import Context, Template
from django.test import RequestFactory
from django.urls import reverse

from notify_tracking import record_event
from notify_tracking import status as st
from notify_tracking.models import Notification
from tests.status_factories import CHAT_CHANNELS, notify_with_statuses
from tests.testapp.models import Comment, Task

pytestmark = pytest.mark.django_db

ONE = "{% load notify_tracking %}{% delivery_badge target %}"
MANY = (
    "{% load notify_tracking %}{% delivery_badges_for comments as badges %}"
    "{% for comment in comments %}<p>{{ comment.body }} {% delivery_badge comment badges %}</p>"
    "{% endfor %}"
)


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("boss", "boss@corp.example", is_staff=True)


@pytest.fixture
def viewer(django_user_model):
    user = django_user_model.objects.create_user("viewer", "viewer@corp.example")
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_task", "view_comment"])
    )
    return user


def render(template: str, user, **context) -> str:
    request = RequestFactory().get("/")
    request.user = user
    return Template(template).render(Context({"request": request, **context}))


def test_badge_markup_is_accessible(task, staff):
    notify_with_statuses(task, [st.OPENED, st.DELIVERED])

    html = render(ONE, staff, target=task)

    button = re.search(r"<button [^>]*data-nt-toggle[^>]*>", html).group(0)
    assert 'type="button"' in button
    assert 'aria-label="Notification status: Read by 1 of 2"' in button
    assert 'aria-haspopup="dialog"' in button and 'aria-expanded="false"' in button
    popup_id = re.search(r'aria-controls="([^"]+)"', button).group(1)
    popup = re.search(rf'<div class="nt-popup" id="{popup_id}"[^>]*>', html).group(0)
    assert 'role="dialog"' in popup and "hidden" in popup
    assert f'aria-labelledby="{popup_id}-title"' in popup
    assert 'src="/static/notify_tracking/icons/read.svg" alt=""' in html
    assert "nt-badge--read" in html and "nt-badge--partial" in html


def test_badge_has_no_inline_script_or_style(task, staff):
    notify_with_statuses(task, [st.CLICKED, st.BOUNCED])

    html = render(ONE, staff, target=task)

    assert "<script" not in html
    assert not re.search(r"\son[a-z]+=", html), "no inline event handlers"
    assert "style=" not in html
    assert "javascript:" not in html
    classes = " ".join(re.findall(r'class="([^"]+)"', html)).split()
    assert classes and all(name.startswith("nt-") for name in classes)


def test_popup_shows_recipients_statuses_and_why(task, staff):
    notification = notify_with_statuses(task, [st.CLICKED, st.BOUNCED, st.DEFERRED])
    clicked = notification.deliveries.order_by("id").first()
    record_event(clicked, st.OPENED, source="pixel")
    record_event(clicked, st.OPENED, source="pixel", is_machine=True)
    record_event(clicked, st.DOWNLOAD, source="download", details={"filename": "plan.pdf"})

    html = render(ONE, staff, target=task)

    assert "User 0" in html and "user0@example.com" in html
    assert "via Email" in html
    assert ">Clicked<" in html and ">Bounced<" in html and ">Delayed<" in html
    assert "Opened once" in html
    assert "1 possibly automatic open (" in html
    assert "https://example.com/tasks/1" in html and "plan.pdf" in html
    assert "Why it failed: 550 mailbox unavailable" in html
    assert "Why it is delayed: 421 try again later" in html
    assert "data-nt-refresh" in html, "a status still moving can be refreshed"


def test_plurals(task, staff):
    notification = notify_with_statuses(task, [st.OPENED])
    delivery = notification.deliveries.get()
    record_event(delivery, st.OPENED, source="pixel")
    record_event(delivery, st.OPENED, source="pixel", is_machine=True)
    record_event(delivery, st.OPENED, source="pixel", is_machine=True)

    html = render(ONE, staff, target=task)

    assert "Opened 2 times" in html
    assert "2 possibly automatic opens (" in html


def test_messenger_says_it_cannot_report_reads(task, staff, settings):
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "CHANNELS": CHAT_CHANNELS}
    notify_with_statuses(task, [st.SENT], channel="chat")

    html = render(ONE, staff, target=task)

    assert "Chat does not report deliveries or reads" in html
    assert "data-nt-refresh>" not in html, "nothing more can be learned: no refresh"


def test_addresses_are_masked_for_viewers(task, viewer, staff):
    notify_with_statuses(task, [st.SENT], sender=staff)

    html = render(ONE, viewer, target=task)

    assert "User 0" in html and "u***@example.com" in html
    assert "user0@example.com" not in html


@pytest.mark.parametrize("who", ["anonymous", "stranger"])
def test_nothing_is_shown_to_those_who_may_not_see(task, django_user_model, who):
    notify_with_statuses(task, [st.OPENED])
    user = AnonymousUser() if who == "anonymous" else django_user_model.objects.create_user(who)

    assert render(ONE, user, target=task) == ""


def test_nothing_is_shown_for_a_target_never_notified(task, staff):
    assert render(ONE, staff, target=task) == ""
    assert render(ONE, staff, target=None) == ""


def test_assets_tag_links_files_only():
    html = Template("{% load notify_tracking %}{% delivery_badge_assets %}").render(Context())

    assert html == (
        '<link rel="stylesheet" href="/static/notify_tracking/badge.css">'
        '<script src="/static/notify_tracking/badge.js" defer></script>'
    )


def _page_of_comments(count: int) -> list[Comment]:
    task = Task.objects.create(title="List")
    comments = [Comment.objects.create(task=task, body=f"comment {i}") for i in range(count)]
    for index, comment in enumerate(comments):
        notify_with_statuses(comment, [(st.OPENED, st.SENT, st.BOUNCED)[index % 3], st.SENT])
    return comments


@pytest.mark.parametrize("count", [2, 200])
def test_a_page_of_badges_costs_the_same_queries(count, viewer, django_assert_num_queries):
    comments = _page_of_comments(count)
    render(MANY, viewer, comments=comments[:1])  # warm the content type cache

    viewer = type(viewer).objects.get(pk=viewer.pk)  # a fresh user: permissions not cached
    # 3 for the summaries, 2 for the viewer's permissions (user and group permissions)
    with django_assert_num_queries(5):
        html = render(MANY, viewer, comments=comments)

    assert html.count("data-nt-badge") == count
    assert html.count('status: Read by 1 of 2"') == len(range(0, count, 3))


def test_fragment_view_is_the_badge_and_checks_permission(client, task, viewer, django_user_model):
    notify_with_statuses(task, [st.OPENED, st.SENT])
    url = reverse("notify_tracking:status-badge", args=["testapp.task", task.pk])

    anonymous = client.get(url)
    client.force_login(django_user_model.objects.create_user("stranger"))
    stranger = client.get(url)
    client.force_login(viewer)
    allowed = client.get(url)

    assert anonymous.status_code == 404 and stranger.status_code == 404
    assert allowed.status_code == 200
    assert "private" in allowed["Cache-Control"]
    assert 'aria-label="Notification status: Read by 1 of 2"' in allowed.content.decode()
    assert client.post(url).status_code == 405


@pytest.mark.parametrize("path", ["nope.task/1/", "testapp.task/x/", "testapp.task/999/"])
def test_fragment_view_unknown_targets(client, staff, path):
    client.force_login(staff)

    assert client.get(f"/notify/status/{path}badge/").status_code == 404


def test_latest_notification_is_the_one_shown(task, staff):
    notify_with_statuses(task, [st.OPENED])
    notify_with_statuses(task, [st.FAILED], subject="Reopened")

    html = render(ONE, staff, target=task)

    assert Notification.objects.count() == 2
    assert "Reopened" in html and "latest of 2 notifications" in html
    assert "nt-badge--error" in html
