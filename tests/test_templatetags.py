"""{% delivery_badge %} and friends: accessible markup, no inline code, batched queries.

Two forms: alone, ``{% delivery_badge obj %}`` renders the icon with its popup; in a
list (``{% delivery_badges_for %}``), each badge is its icon, and the popup loads the
same full badge from the fragment view (``data-nt-url``) when it is opened.
"""

from __future__ import annotations

import html as html_module
import re

import pytest
from django.contrib.auth.models import AnonymousUser, Permission
from django.template import Context, Template, TemplateSyntaxError
from django.test import RequestFactory
from django.urls import reverse
from django.utils import translation

from notify_tracking import record_event
from notify_tracking import status as st
from notify_tracking.models import Notification
from tests.status_factories import CHAT_CHANNELS, notify_with_statuses
from tests.testapp.models import Comment, Task, Ticket, UUIDTask

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


def _attributes(tag: str) -> dict[str, str]:
    """The attributes of one start tag (``name="value"``, or ``name`` alone)."""
    return {
        name: value
        for name, value in re.findall(r'\s([a-z-]+)(?:="([^"]*)")?', tag.split(">", 1)[0])
    }


def _badges(html: str) -> list[str]:
    """Each badge of a page: its ``<span data-nt-badge ...>`` through its icon."""
    return re.findall(r"<span [^>]*data-nt-badge[^>]*><button [^>]*>", html)


def test_single_badge_markup_is_accessible_with_its_popup(task, staff):
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


@pytest.mark.parametrize("form", ["single badge, in the page", "list badge, loaded on open"])
def test_popup_shows_recipients_statuses_and_why(client, staff, form):
    comment = Comment.objects.create(task=Task.objects.create(title="T"), body="details")
    notification = notify_with_statuses(comment, [st.CLICKED, st.BOUNCED, st.DEFERRED])
    clicked = notification.deliveries.order_by("id").first()
    record_event(clicked, st.OPENED, source="pixel")
    record_event(clicked, st.OPENED, source="pixel", is_machine=True)
    record_event(clicked, st.DOWNLOAD, source="download", details={"filename": "plan.pdf"})

    if form.startswith("single"):
        html = render(ONE, staff, target=comment)
    else:  # what the popup script does: fetch the badge's data-nt-url
        url = _attributes(_badges(render(MANY, staff, comments=[comment]))[0])["data-nt-url"]
        client.force_login(staff)
        html = client.get(url).content.decode()

    assert html.count("data-nt-recipient") == 3
    assert "User 0" in html and "user0@example.com" in html
    assert "via Email" in html
    assert ">Clicked<" in html and ">Bounced<" in html and ">Delayed<" in html
    assert "Opened once" in html
    assert "1 possibly automatic open (" in html
    assert "https://example.com/tasks/1" in html and "plan.pdf" in html
    assert "Why it failed: 550 mailbox unavailable" in html
    assert "Why it is delayed: 421 try again later" in html
    assert "<time datetime=" in html
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


def test_assets_tag_links_files_with_the_script_texts():
    html = Template("{% load notify_tracking %}{% delivery_badge_assets %}").render(Context())

    link, script = re.findall(r"<(?:link|script)[^>]*>", html)
    assert link == '<link rel="stylesheet" href="/static/notify_tracking/badge.css">'
    assert html.endswith("></script>"), "the script tag holds no code"
    attributes = _attributes(script)
    assert attributes.pop("src") == "/static/notify_tracking/badge.js"
    assert "defer" in attributes and "data-nt-texts" in attributes
    assert {
        name: value for name, value in attributes.items() if name.startswith("data-nt-text-")
    } == {
        "data-nt-text-loading": "Loading the details…",
        "data-nt-text-load-error": "The details could not be loaded. Try again later.",
        "data-nt-text-unavailable": "You may not see these details, or they no longer exist.",
        "data-nt-text-retry": "Try again",
        "data-nt-text-close": "Close",
    }


def test_assets_texts_are_translated():
    with translation.override("ru"):
        html = Template("{% load notify_tracking %}{% delivery_badge_assets %}").render(Context())

    assert 'data-nt-text-loading="Загрузка подробностей…"' in html
    assert 'data-nt-text-load-error="Не удалось загрузить подробности. Попробуйте позже."' in html  # noqa: RUF001
    assert 'data-nt-text-unavailable="Эти подробности вам недоступны' in html
    assert 'data-nt-text-retry="Повторить"' in html and 'data-nt-text-close="Закрыть"' in html


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
    # 1 for the badges (one aggregate query), 2 for the viewer's permissions (user and
    # group permissions)
    with django_assert_num_queries(3):
        html = render(MANY, viewer, comments=comments)

    assert html.count("data-nt-badge") == count
    assert html.count('status: Read by 1 of 2"') == len(range(0, count, 3))
    assert html.count('status: Sent to 1 of 2; Error (1 of 2)"') == len(range(2, count, 3))


def test_list_badge_is_an_accessible_icon_without_its_details(viewer):
    comments = _page_of_comments(3)

    html = render(MANY, viewer, comments=comments)

    first = _badges(html)[0]
    span, button = _attributes(first), _attributes(first.split("><", 1)[1])
    assert span["class"] == "nt-badge nt-badge--read nt-badge--partial"
    assert span["data-nt-url"] == reverse(
        "notify_tracking:status-badge", args=["testapp.comment", comments[0].pk]
    )
    assert (span["data-nt-state"], span["data-nt-count"], span["data-nt-total"]) == (
        "read",
        "1",
        "2",
    )
    assert span["data-nt-errors"] == "0"
    assert button["type"] == "button" and "data-nt-toggle" in button
    assert button["aria-label"] == "Notification status: Read by 1 of 2"
    assert button["title"] == "Read by 1 of 2"
    assert button["aria-haspopup"] == "dialog" and button["aria-expanded"] == "false"
    assert "aria-controls" not in button, "no popup in the page yet: the script adds it"
    assert 'src="/static/notify_tracking/icons/read.svg" alt=""' in html
    third = _attributes(_badges(html)[2])
    assert third["class"] == "nt-badge nt-badge--sent nt-badge--partial nt-badge--has-errors"
    # the details are not in the page: they load when the popup is opened
    assert "data-nt-popup" not in html and "data-nt-recipient" not in html
    assert "example.com" not in html and "550 mailbox" not in html


@pytest.mark.parametrize(
    "call",
    [
        "{% delivery_badge comment badges=badges %}",
        "{% delivery_badge comment badges as html %}{{ html }}",
        "{% delivery_badge comment badges=badges as html %}<i>{{ html }}</i>",
        "{% delivery_badge target=comment badges=badges %}",
        "{% delivery_badge badges=badges target=comment %}",
    ],
)
def test_list_badge_takes_the_keyword_and_as_forms(viewer, call):
    comments = _page_of_comments(3)
    positional = render(MANY, viewer, comments=comments)
    other = MANY.replace("{% delivery_badge comment badges %}", call)

    html = render(other, viewer, comments=comments)

    assert _badges(html) == _badges(positional) and len(_badges(html)) == 3


def test_badge_as_a_variable_is_rendered_where_it_is_used(task, staff):
    notify_with_statuses(task, [st.OPENED])
    alone = render(ONE, staff, target=task)

    html = render(
        "{% load notify_tracking %}{% delivery_badge target as badge %}[{{ badge }}]",
        staff,
        target=task,
    )

    def same_ids(text: str) -> str:  # each popup gets an id of its own
        return re.sub(r"nt-popup-[0-9a-f]+", "nt-popup-ID", text)

    assert same_ids(html) == same_ids(f"[{alone}]") and "data-nt-popup" in html


@pytest.mark.parametrize(
    "call",
    [
        "{% delivery_badge %}",
        "{% delivery_badge comment badges extra %}",
        "{% delivery_badge comment colour=badges %}",
        "{% delivery_badge comment badges=badges badges=badges %}",
        "{% delivery_badge comment badges as %}",
    ],
)
def test_a_wrong_badge_call_is_a_template_syntax_error(call):
    with pytest.raises(TemplateSyntaxError, match="delivery_badge"):
        Template("{% load notify_tracking %}" + call)


def test_list_badge_has_no_inline_script_or_style(staff):
    comments = _page_of_comments(3)

    html = render(MANY, staff, comments=comments)

    assert "<script" not in html
    assert not re.search(r"\son[a-z]+=", html), "no inline event handlers"
    assert "style=" not in html and "javascript:" not in html
    badge_classes = " ".join(re.findall(r'<span class="([^"]+)"', html)).split()
    assert len(badge_classes) >= 3 and all(name.startswith("nt-") for name in badge_classes)


def test_list_badge_and_loaded_badge_show_the_same_icon(client, viewer):
    comments = _page_of_comments(3)
    html = render(MANY, viewer, comments=comments)
    client.force_login(viewer)

    for comment, badge in zip(comments, _badges(html), strict=True):
        loaded = client.get(_attributes(badge)["data-nt-url"])
        fresh = _badges(loaded.content.decode())

        assert loaded.status_code == 200 and len(fresh) == 1
        fresh_span = _attributes(fresh[0])
        assert fresh_span.pop("data-nt-refresh-error").startswith("The status could not")
        assert fresh_span == _attributes(badge), comment
        button, fresh_button = (_attributes(tag.split("><", 1)[1]) for tag in (badge, fresh[0]))
        assert fresh_button.pop("aria-controls").startswith("nt-popup-")
        assert fresh_button == button


def test_list_badge_urls_of_every_key_type(client, staff):
    task = Task.objects.create(title="Int keyed")
    uuid_task = UUIDTask.objects.create(title="UUID keyed")
    comment = Comment.objects.create(task=task, body="c")
    tickets = [Ticket.objects.create(key=key) for key in ("PROJ/123", "ops:42 ü&", "a%2Fb")]
    targets = [task, uuid_task, comment, *tickets]
    for target in targets:
        notify_with_statuses(target, [st.SENT])
    template = (
        "{% load notify_tracking %}{% delivery_badges_for targets as badges %}"
        "{% for target in targets %}{% delivery_badge target badges %}{% endfor %}"
    )

    html = render(template, staff, targets=targets)

    urls = [html_module.unescape(_attributes(badge)["data-nt-url"]) for badge in _badges(html)]
    assert urls == [
        reverse("notify_tracking:status-badge", args=["testapp.task", task.pk]),
        reverse("notify_tracking:status-badge", args=["testapp.uuidtask", uuid_task.pk]),
        reverse("notify_tracking:status-badge", args=["testapp.comment", comment.pk]),
        *(reverse("notify_tracking:status-badge", args=["testapp.ticket", t.pk]) for t in tickets),
    ]
    client.force_login(staff)
    for url in urls:  # what the popup loads
        response = client.get(url)
        assert response.status_code == 200, url
        assert "Sent" in response.content.decode(), url


@pytest.mark.parametrize(
    ("key", "in_url"),
    [
        ("a/../b", "a%2F..%2Fb"),  # a browser would ask for "b"
        ("./a", ".%2Fa"),
        ("a//b", "a%2F%2Fb"),
        ("PROJ/", "PROJ%2F"),
        ("..", None),  # a dot segment however it is written: no URL
        ("", None),  # no route takes an empty key
    ],
)
def test_a_key_a_browser_would_rewrite_is_sent_with_its_slashes_encoded(client, staff, key, in_url):
    ticket = Ticket.objects.create(key=key)
    other = Ticket.objects.create(key="b")
    for target in (ticket, other):
        notify_with_statuses(target, [st.SENT] if target is ticket else [st.BOUNCED])

    html = render(MANY, staff, comments=[ticket])

    attributes = _attributes(_badges(html)[0])
    if in_url is None:
        assert "data-nt-url" not in attributes
        return
    url = html_module.unescape(attributes["data-nt-url"])
    assert url == f"/notify/status/testapp.ticket/{in_url}/badge/"
    client.force_login(staff)
    page = client.get(url).content.decode()
    assert "Sent" in page and "Error" not in page  # its own badge, not "b"'s bounce


def test_list_badge_of_an_object_missing_from_the_map_and_from_summaries(
    staff, django_assert_num_queries
):
    comments = _page_of_comments(2)
    template = (
        "{% load notify_tracking %}{% for comment in comments %}"
        "{% delivery_badge comment badges %}{% endfor %}"
    )
    from notify_tracking import summaries

    render(MANY, staff, comments=comments[:1])  # warm the content type cache
    first_only = summaries(comments[:1])
    with django_assert_num_queries(1):  # the missing one: a query of its own
        missing = render(template, staff, comments=comments, badges=first_only)
    from_summaries = render(template, staff, comments=comments, badges=summaries(comments))

    assert (
        _badges(missing)
        == _badges(from_summaries)
        == _badges(render(MANY, staff, comments=comments))
    )
    assert len(_badges(missing)) == 2 and "data-nt-popup" not in from_summaries


@pytest.mark.parametrize("who", ["anonymous", "stranger"])
def test_list_shows_nothing_to_those_who_may_not_see(django_user_model, who):
    comments = _page_of_comments(3)
    user = AnonymousUser() if who == "anonymous" else django_user_model.objects.create_user(who)

    html = render(MANY, user, comments=comments)

    assert "data-nt-badge" not in html and html.count("<p>") == 3


def test_list_badge_is_russian(viewer):
    comments = _page_of_comments(1)

    with translation.override("ru"):
        html = render(MANY, viewer, comments=comments)

    button = _attributes(_badges(html)[0].split("><", 1)[1])
    assert button["aria-label"] == "Статус уведомления: Прочитал 1 из 2"
    assert button["title"] == "Прочитал 1 из 2"


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


@pytest.mark.parametrize("who", ["viewer", "anonymous"])
def test_list_badges_for_a_lazy_request_user(viewer, who):
    # request.user as AuthenticationMiddleware sets it: evaluated on first use
    from django.utils.functional import SimpleLazyObject

    comments = _page_of_comments(3)
    user = SimpleLazyObject(lambda: viewer if who == "viewer" else AnonymousUser())

    html = render(MANY, user, comments=comments)

    assert len(_badges(html)) == (3 if who == "viewer" else 0)
