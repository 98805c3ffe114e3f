"""The activity log's search parameters: parsing, bad input, and what each one selects."""

from __future__ import annotations

import datetime as dt

import pytest
from django.http import QueryDict
from django.test import override_settings
from django.utils import timezone

from notify_tracking import status as st
from notify_tracking.activity.filters import FilterError, parse, search
from notify_tracking.models import Delivery
from notify_tracking.targets import key_of
from tests.activity_support import delivery_to, make_notification, record, sent_at_age
from tests.status_factories import CHAT_CHANNELS
from tests.testapp.models import Comment, OpenTask, Task, UUIDTask

pytestmark = pytest.mark.django_db


def recipients(params: dict) -> list[str]:
    return sorted(search(params).values_list("recipient", flat=True))


def errors_of(params) -> dict[str, str]:
    with pytest.raises(FilterError) as raised:
        parse(params)
    return raised.value.errors


# --- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "name", "words"),
    [
        ({"recipients": "a@example.com"}, "recipients", "unknown parameter"),
        ({"q": "x"}, "q", "recipient, recipient_prefix"),
        ({"recipient": "a\x00b@example.com"}, "recipient", "control characters"),
        ({"subject": "x" * 321}, "subject", "too long"),
        ({"since": "03/05/2024"}, "since", "use ISO 8601"),
        ({"since": "2024-13-01"}, "since", "not a date or time"),
        ({"until": "2024-05-03T25:00"}, "until", "not a date or time"),
        ({"since": "0001-01-01"}, "since", "between the years"),
        ({"until": "9999-12-31"}, "until", "between the years"),
        ({"since": "2024-05-03", "until": "2024-05-02"}, "until", "later than since"),
        ({"status": "sent,lost"}, "status", "unknown status lost"),
        ({"channel": "e mail"}, "channel", "not a channel name"),
        ({"target": "task:1"}, "target", "<app_label>.<model>:<pk>"),
        ({"target": "testapp.task"}, "target", "<app_label>.<model>:<pk>"),
        ({"target": "testapp.nosuchmodel:1"}, "target", "unknown target type"),
        ({"target": "testapp.task:abc"}, "target", "not a valid key"),
        ({"target": "testapp.uuidtask:42"}, "target", "not a valid key"),
        ({"subject": "a b c d e f g h i"}, "subject", "at most 8 words"),
    ],
)
def test_bad_input_names_the_parameter(params, name, words):
    errors = errors_of(params)
    assert set(errors) == {name}
    assert words.lower() in errors[name].lower()


def test_a_parameter_given_twice_is_refused():
    errors = errors_of(QueryDict("status=sent&status=failed"))
    assert errors == {"status": "give this parameter once"}


def test_every_bad_parameter_is_reported_at_once():
    errors = errors_of({"since": "yesterday", "status": "lost", "nope": "1"})
    assert set(errors) == {"since", "status", "nope"}


def test_parameters_the_caller_handles_are_let_through():
    assert parse({"cursor": "abc", "page_size": "10"}, extra=["cursor", "page_size"]) == parse({})


def test_empty_values_select_everything():
    assert parse({"recipient": "", "status": "  "}) == parse({})


# --- what each filter selects ---------------------------------------------------------


def test_recipient_is_exact(task):
    make_notification(task, ["alice@example.com", "alice@example.com.evil.test", "bob@example.com"])
    assert recipients({"recipient": "alice@example.com"}) == ["alice@example.com"]
    assert recipients({"recipient": "alice@example"}) == []


def test_recipient_matches_the_lower_case_form(task):
    make_notification(task, ["alice@example.com"])
    assert recipients({"recipient": "Alice@Example.COM"}) == ["alice@example.com"]


def test_recipient_is_matched_in_any_case(task):
    # Addresses are stored as given: a mixed-case one is found however it is typed.
    make_notification(task, ["Alice@Example.com", "bob@example.com", "alice@example.org"])
    for typed in ("Alice@Example.com", "alice@example.com", "ALICE@EXAMPLE.COM"):
        assert recipients({"recipient": typed}) == ["Alice@Example.com"], typed
    assert recipients({"recipient": "BOB@example.COM"}) == ["bob@example.com"]


def test_recipient_prefix_is_matched_in_any_case(task):
    make_notification(task, ["Alice@Example.com", "alicia@example.com", "ALINA@example.com"])
    make_notification(task, ["bob@example.com"])
    expected = ["ALINA@example.com", "Alice@Example.com", "alicia@example.com"]
    for typed in ("ali", "ALI", "aLi"):
        assert recipients({"recipient_prefix": typed}) == expected, typed
    assert recipients({"recipient_prefix": "alice@EXAMPLE"}) == ["Alice@Example.com"]
    assert recipients({"recipient_prefix": "lice"}) == []  # a prefix, not a substring


def test_wildcards_are_literal_in_the_case_insensitive_search(task):
    addresses = ["A_b@example.com", "axb@example.com", "a%C@example.com", "abc@example.com"]
    make_notification(task, addresses)
    # Exact: '_' and '%' match themselves only, in any case.
    assert recipients({"recipient": "a_B@EXAMPLE.COM"}) == ["A_b@example.com"]
    assert recipients({"recipient": "A%c@example.com"}) == ["a%C@example.com"]
    assert recipients({"recipient": "a%b@example.com"}) == []  # would match A_b as a LIKE
    assert recipients({"recipient": "%"}) == []
    assert recipients({"recipient": "_"}) == []
    # Prefix: likewise.
    assert recipients({"recipient_prefix": "a_"}) == ["A_b@example.com"]
    assert recipients({"recipient_prefix": "A%"}) == ["a%C@example.com"]
    assert recipients({"recipient_prefix": "a%c"}) == ["a%C@example.com"]
    assert recipients({"recipient_prefix": "%"}) == []
    assert recipients({"recipient_prefix": "_"}) == []


def test_recipient_prefix(task):
    make_notification(task, ["alice@example.com", "alicia@example.com", "bob@example.com"])
    assert recipients({"recipient_prefix": "ali"}) == ["alice@example.com", "alicia@example.com"]
    assert recipients({"recipient_prefix": "example.com"}) == []  # a prefix, not a substring


def test_wildcards_and_quotes_are_literal(task):
    addresses = ["a_b@example.com", "axb@example.com", "a%c@example.com", "o'neil@example.com"]
    make_notification(task, addresses)
    assert recipients({"recipient_prefix": "a_"}) == ["a_b@example.com"]
    assert recipients({"recipient_prefix": "a%"}) == ["a%c@example.com"]
    assert recipients({"recipient_prefix": "%"}) == []
    assert recipients({"recipient_prefix": "_"}) == []
    assert recipients({"recipient": "o'neil@example.com"}) == ["o'neil@example.com"]
    assert recipients({"recipient_prefix": "o'"}) == ["o'neil@example.com"]
    assert recipients({"recipient": "' OR '1'='1"}) == []


@override_settings(NOTIFY_TRACKING={"CHANNELS": CHAT_CHANNELS})
def test_backslash_is_literal(task):
    make_notification(task, ["room\\_1", "roomx1"], channel="chat")
    assert recipients({"recipient_prefix": "room\\_"}) == ["room\\_1"]
    assert recipients({"recipient_prefix": "room\\"}) == ["room\\_1"]


def test_subject_words_all_match_in_any_case(task):
    make_notification(task, ["a@example.com"], subject="Fix the LOGIN page")
    make_notification(task, ["b@example.com"], subject="Login broken")
    make_notification(task, ["c@example.com"], subject="100% done")
    make_notification(task, ["d@example.com"], subject="1000 things done")
    assert recipients({"subject": "login page"}) == ["a@example.com"]
    assert recipients({"subject": "login"}) == ["a@example.com", "b@example.com"]
    assert recipients({"subject": "100%"}) == ["c@example.com"]


def test_target(task):
    other = Task.objects.create(title="Other")
    comment = Comment.objects.create(task=task, body="Looks good")
    uuid_task = UUIDTask.objects.create(title="Remote")
    make_notification(task, ["task@example.com"])
    make_notification(other, ["other@example.com"])
    make_notification(comment, ["comment@example.com"])
    make_notification(uuid_task, ["uuid@example.com"])
    assert recipients({"target": f"testapp.task:{task.pk}"}) == ["task@example.com"]
    assert recipients({"target": f"testapp.comment:{comment.pk}"}) == ["comment@example.com"]
    assert recipients({"target": f"testapp.uuidtask:{uuid_task.pk}"}) == ["uuid@example.com"]
    assert recipients({"target": "testapp.task:999999"}) == []


def test_target_of_a_proxy_model():
    """notify() keeps the concrete model's type, as Django's generic relations do: the
    proxy's key (``key_of()``) and the concrete model's find the same deliveries."""
    proxied = OpenTask.objects.create(title="Proxied")
    make_notification(proxied, ["proxy@example.com"])
    assert key_of(proxied) == f"testapp.opentask:{proxied.pk}"
    assert recipients({"target": key_of(proxied)}) == ["proxy@example.com"]
    assert recipients({"target": f"testapp.task:{proxied.pk}"}) == ["proxy@example.com"]


def test_status_list_and_read_alias(task):
    notification = make_notification(
        task, ["sent@example.com", "read@example.com", "bounced@example.com", "q@example.com"]
    )
    record(delivery_to(notification, "sent@example.com"), st.SENT)
    record(delivery_to(notification, "read@example.com"), st.SENT, st.OPENED)
    record(delivery_to(notification, "bounced@example.com"), st.SENT, st.BOUNCED)
    assert recipients({"status": "read"}) == ["read@example.com"]
    assert recipients({"status": "opened"}) == ["read@example.com"]
    assert recipients({"status": "bounced, sent"}) == ["bounced@example.com", "sent@example.com"]


@override_settings(NOTIFY_TRACKING={"CHANNELS": CHAT_CHANNELS})
def test_channel(task):
    make_notification(task, ["a@example.com"])
    make_notification(task, ["chat-7"], channel="chat")
    assert recipients({"channel": "chat"}) == ["chat-7"]
    assert recipients({"channel": "email,chat"}) == ["a@example.com", "chat-7"]
    assert recipients({"channel": "sms"}) == []


def test_sender_by_name_email_or_id(task, user, django_user_model):
    bob = django_user_model.objects.create_user("bob", "bob@example.com", "pw")
    make_notification(task, ["from-alice@example.com"], sender=user)
    make_notification(task, ["from-bob@example.com"], sender=bob)
    make_notification(task, ["from-nobody@example.com"])
    assert recipients({"sender": "alice"}) == ["from-alice@example.com"]
    assert recipients({"sender": "bob@example.com"}) == ["from-bob@example.com"]
    assert recipients({"sender": str(bob.pk)}) == ["from-bob@example.com"]
    assert recipients({"sender": "carol"}) == []


def test_time_range_bounds(task):
    now = timezone.now().replace(microsecond=0)
    old = make_notification(task, ["old@example.com"])
    edge = make_notification(task, ["edge@example.com"])
    new = make_notification(task, ["new@example.com"])
    sent_at_age(old, dt.timedelta(days=3), now=now)
    sent_at_age(edge, dt.timedelta(days=2), now=now)
    sent_at_age(new, dt.timedelta(days=1), now=now)
    two_days_ago = (now - dt.timedelta(days=2)).isoformat()
    assert recipients({"since": two_days_ago}) == ["edge@example.com", "new@example.com"]
    assert recipients({"until": two_days_ago}) == ["edge@example.com", "old@example.com"]


def test_an_until_date_keeps_the_whole_day(task):
    notification = make_notification(task, ["late@example.com"])
    late_evening = timezone.make_aware(dt.datetime(2024, 5, 3, 23, 59, 59))
    Delivery.objects.filter(notification=notification).update(created_at=late_evening)
    assert recipients({"until": "2024-05-03"}) == ["late@example.com"]
    assert recipients({"until": "2024-05-02"}) == []
    assert recipients({"since": "2024-05-04"}) == []
    assert recipients({"since": "2024-05-03", "until": "2024-05-03"}) == ["late@example.com"]


def test_filters_combine(task, user):
    make_notification(task, ["alice@example.com"], subject="Login", sender=user)
    make_notification(task, ["alice@example.com"], subject="Billing")
    make_notification(task, ["alina@example.com"], subject="Login")
    found = search({"recipient_prefix": "alice", "subject": "login", "sender": "alice"})
    assert [(d.recipient, d.notification.subject) for d in found] == [
        ("alice@example.com", "Login")
    ]
