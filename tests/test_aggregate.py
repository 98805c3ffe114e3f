"""summary() and summaries(): states, labels, per-recipient details, query counts."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone, translation
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from notify_tracking import record_event, summaries, summary
from notify_tracking import status as st
from notify_tracking.aggregate import badge_states
from notify_tracking.models import Notification
from tests.status_factories import CHAT_CHANNELS, PATHS, notify_with_statuses
from tests.testapp.models import Comment, Task, UUIDTask

pytestmark = pytest.mark.django_db


CASES = [
    ([st.QUEUED], "queued", True, "Queued"),
    ([st.QUEUED, st.QUEUED], "queued", True, "Queued"),
    ([st.DEFERRED, st.QUEUED], "queued", True, "Delayed"),
    ([st.SENT], "sent", True, "Sent"),
    ([st.SENT, st.SENT, st.SENT], "sent", True, "Sent"),
    ([st.SENT, st.QUEUED, st.QUEUED], "sent", False, "Sent to 1 of 3"),
    ([st.DELIVERED], "delivered", True, "Delivered"),
    ([st.DELIVERED, st.DELIVERED], "delivered", True, "Delivered to all"),
    ([st.DELIVERED, st.DELIVERED, st.SENT], "delivered", False, "Delivered to 2 of 3"),
    ([st.OPENED], "read", True, "Read"),
    ([st.CLICKED], "read", True, "Read"),
    ([st.OPENED, st.CLICKED, st.OPENED], "read", True, "Read by all"),
    ([st.OPENED, st.OPENED, st.DELIVERED], "read", False, "Read by 2 of 3"),
    ([st.CLICKED, st.SENT, st.QUEUED], "read", False, "Read by 1 of 3"),
    ([st.FAILED], "error", True, "Error"),
    ([st.BOUNCED, st.REJECTED, st.FAILED], "error", True, "Error"),
    ([st.COMPLAINED, st.BOUNCED], "error", True, "Error"),
    (
        [st.OPENED, st.DELIVERED, st.BOUNCED],
        "read",
        False,
        "Read by 1 of 3; Error (1 of 3)",
    ),
    (
        [st.DELIVERED, st.FAILED, st.REJECTED],
        "delivered",
        False,
        "Delivered to 1 of 3; Errors (2 of 3)",
    ),
    ([st.DEFERRED, st.FAILED], "queued", False, "Delayed; Error (1 of 2)"),
]


@pytest.mark.parametrize(("statuses", "state", "complete", "label"), CASES)
def test_state_complete_and_label(task, statuses, state, complete, label):
    notify_with_statuses(task, statuses)

    result = summary(task)

    assert result["state"] == state
    assert result["complete"] is complete
    assert result["label"] == label
    assert result["total"] == len(statuses)
    assert result["errors"] == sum(status in st.FAILURES for status in statuses)
    for status in set(statuses):
        assert result["counts"][status] == statuses.count(status)


def test_no_notification(task):
    result = summary(task)

    assert result["state"] is None
    assert result["total"] == 0
    assert result["complete"] is False
    assert result["deliveries"] == []
    assert result["notification"] is None
    assert result["label"] == "Not notified"


def test_uuid_target_and_integer_target_with_the_same_text_key():
    uuid_task = UUIDTask.objects.create(title="UUID keyed")
    task = Task.objects.create(title="Int keyed")
    notify_with_statuses(uuid_task, [st.OPENED, st.SENT])
    notify_with_statuses(task, [st.FAILED])

    result = summaries([uuid_task, task])

    assert result[uuid_task.pk]["label"] == "Read by 1 of 2"
    assert result[task.pk]["state"] == "error"
    assert summary(uuid_task)["deliveries"][0]["status"] == st.OPENED


def test_latest_notification_is_shown_and_all_are_counted(task, django_user_model):
    first_sender = django_user_model.objects.create_user("first")
    second_sender = django_user_model.objects.create_user("second")
    old = notify_with_statuses(task, [st.OPENED, st.OPENED], sender=first_sender)
    Notification.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(days=1))
    new = notify_with_statuses(task, [st.SENT], sender=second_sender, subject="Second")

    result = summary(task)

    assert result["notification"] == {
        "id": new.pk,
        "subject": "Second",
        "channel": "email",
        "created_at": Notification.objects.get(pk=new.pk).created_at,  # aware, as the ORM's
        "sender_id": second_sender.pk,
    }
    assert result["notification_count"] == 2
    assert result["sender_ids"] == sorted([first_sender.pk, second_sender.pk])
    assert result["label"] == "Sent"


def test_the_latest_notification_is_the_last_created_whatever_its_clock_said(task):
    # Two web servers whose clocks differ: the notification created last has the older
    # created_at. The last created (the highest id) is the latest, for both readers.
    first = notify_with_statuses(task, [st.OPENED], subject="First")
    last = notify_with_statuses(task, [st.BOUNCED], subject="Last")
    Notification.objects.filter(pk=last.pk).update(
        created_at=first.created_at - dt.timedelta(seconds=2)
    )

    assert summary(task)["notification"]["subject"] == "Last"
    assert badge_states([task])[task]["label"] == summary(task)["label"] == "Error"


def test_delivery_details(task):
    notify_with_statuses(task, [st.CLICKED, st.BOUNCED])
    delivery = Notification.objects.get().deliveries.order_by("id").first()
    record_event(delivery, st.OPENED, source="pixel", is_machine=True)
    record_event(delivery, st.DOWNLOAD, source="download", details={"filename": "plan.pdf"})
    record_event(
        delivery, st.CLICKED, source="click", is_machine=True, details={"url": "https://bot.test/"}
    )

    clicked, bounced = summary(task)["deliveries"]

    assert clicked["recipient"] == "user0@example.com"
    assert clicked["recipient_name"] == "User 0"
    assert clicked["channel"] == "email"
    assert clicked["status_label"] == "Clicked"
    assert clicked["stage"] == "read"
    assert clicked["machine_open_count"] == 1
    assert clicked["open_count"] == 0
    assert clicked["click_count"] == 2
    assert clicked["machine_click_count"] == 1
    assert clicked["links"] == ["https://example.com/tasks/1"]
    assert clicked["files"] == ["plan.pdf"]
    assert clicked["sent_at"] and clicked["delivered_at"] and clicked["first_clicked_at"]
    assert clicked["reports_reads"] is True
    assert clicked["settled"] is True
    assert bounced["status_label"] == "Bounced"
    assert bounced["error"] == "550 mailbox unavailable"
    assert bounced["failed_at"] is not None


def test_machine_opens_do_not_count_as_read(task):
    notify_with_statuses(task, [st.DELIVERED])
    delivery = Notification.objects.get().deliveries.get()
    record_event(delivery, st.OPENED, source="pixel", is_machine=True)

    result = summary(task)

    assert result["state"] == "delivered"
    assert result["deliveries"][0]["machine_open_count"] == 1
    assert result["settled"] is False


def test_messenger_cannot_report_reads(task, settings):
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "CHANNELS": CHAT_CHANNELS}
    notify_with_statuses(task, [st.SENT], channel="chat")

    result = summary(task)

    assert result["state"] == "sent"
    delivery = result["deliveries"][0]
    assert delivery["reports_reads"] is False
    assert delivery["reports_delivery"] is False
    assert delivery["settled"] is True
    assert result["settled"] is True


def test_a_channel_removed_from_settings_reports_nothing(task, settings):
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "CHANNELS": CHAT_CHANNELS}
    notify_with_statuses(task, [st.SENT], channel="chat")
    only_email = {"email": CHAT_CHANNELS["email"]}
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "CHANNELS": only_email}

    assert summary(task)["deliveries"][0]["reports_reads"] is False


def test_labels_are_translated(task):
    notify_with_statuses(task, [st.OPENED, st.SENT])

    with translation.override("ru"):
        label = summary(task)["label"]

    # The .po files come later; until then the English text is what gettext returns.
    assert isinstance(label, str) and label


def test_mixed_models_with_the_same_pk():
    # Explicit keys: sequences do not restart between tests on PostgreSQL.
    task = Task.objects.create(pk=9001, title="T")
    comment = Comment.objects.create(pk=9001, task=task, body="C")
    notify_with_statuses(task, [st.OPENED])
    notify_with_statuses(comment, [st.FAILED])

    result = summaries([task, comment])

    assert result[task]["state"] == "read"
    assert result[comment]["state"] == "error"
    assert task in result and comment in result
    with pytest.raises(KeyError, match="several models"):
        result[task.pk]


def test_unsaved_target_is_refused():
    with pytest.raises(ValueError, match="not saved"):
        summary(Task(title="unsaved"))


def _make_targets(count: int) -> list[Comment]:
    task = Task.objects.create(title="Many comments")
    comments = [Comment.objects.create(task=task, body=f"c{index}") for index in range(count)]
    for index, comment in enumerate(comments):
        notify_with_statuses(comment, [st.CLICKED, (st.SENT, st.FAILED)[index % 2]])
    return comments


@pytest.mark.parametrize("count", [2, 200])
def test_summaries_cost_the_same_queries_for_2_and_200_targets(count, django_assert_num_queries):
    comments = _make_targets(count)
    tasks = [Task.objects.create(title=f"t{index}") for index in range(count)]
    summary(comments[0])  # warms the content type cache, as any running site has it

    # notifications, deliveries, links and files: three queries for any number of targets
    with django_assert_num_queries(3):
        result = summaries([*comments, *tasks])

    assert all(result[comment]["total"] == 2 for comment in comments)
    assert all(result[task]["state"] is None for task in tasks)


# --- badge_states(): what a list of badges needs, from one aggregate query ---------------

#: The keys a badge state shares with a summary; the rest (deliveries...) is the popup's.
BADGE_KEYS = {
    "state",
    "complete",
    "errors",
    "total",
    "counts",
    "reached",
    "label",
    "notification_count",
    "sender_ids",
}


def test_badge_states_say_what_summaries_say_in_every_case(django_user_model):
    sender = django_user_model.objects.create_user("sender")
    tasks = [Task.objects.create(title=f"case {index}") for index in range(len(CASES))]
    for task, (statuses, *_) in zip(tasks, CASES, strict=True):
        notify_with_statuses(task, statuses, sender=sender)
    never = Task.objects.create(title="never notified")

    states = badge_states([*tasks, never])
    full = summaries([*tasks, never])

    for task, (_statuses, state, complete, label) in zip(tasks, CASES, strict=True):
        assert set(states[task]) == BADGE_KEYS
        assert (states[task]["state"], states[task]["complete"]) == (state, complete)
        assert states[task]["label"] == label
        assert states[task] == {key: full[task][key] for key in BADGE_KEYS}
    assert states[never] == {key: full[never][key] for key in BADGE_KEYS}
    assert states[never]["state"] is None and states[never]["label"] == "Not notified"
    assert states[never]["notification_count"] == 0 and states[never]["sender_ids"] == []


def test_badge_states_describe_the_latest_notification_and_count_all(task, django_user_model):
    first_sender = django_user_model.objects.create_user("first")
    second_sender = django_user_model.objects.create_user("second")
    old = notify_with_statuses(task, [st.OPENED, st.OPENED], sender=first_sender)
    Notification.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(days=1))
    notify_with_statuses(task, [st.SENT, st.BOUNCED], sender=second_sender)

    state = badge_states([task])[task.pk]

    assert state["label"] == "Sent to 1 of 2; Error (1 of 2)"
    assert state["counts"][st.SENT] == 1 and state["counts"][st.OPENED] == 0
    assert state["notification_count"] == 2
    assert state["sender_ids"] == sorted([first_sender.pk, second_sender.pk])


#: A history of notifications: (which of 3 targets, which of 3 senders or None, statuses).
histories = hs.lists(
    hs.tuples(
        hs.integers(0, 2),
        hs.sampled_from([None, 0, 1, 2]),
        hs.lists(hs.sampled_from(list(PATHS)), min_size=1, max_size=3),
    ),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=histories)
def test_badge_states_and_summaries_describe_the_last_notification_for_any_history(
    django_user_model, history
):
    # Both read the latest notification of each target and sender, and keep the
    # target's latest: checked against what the history says, for targets of three
    # models (a task and a comment may share a pk; a UUID key is a string).
    senders = [django_user_model.objects.create_user(f"s{uuid.uuid4().hex}") for _ in range(3)]
    task = Task.objects.create(title="target")
    targets = [task, Comment.objects.create(task=task, body="target"), UUIDTask.objects.create()]
    last: dict[int, tuple[Notification, list[str]]] = {}
    for target, sender, statuses in history:
        notification = notify_with_statuses(
            targets[target], statuses, sender=None if sender is None else senders[sender]
        )
        last[target] = (notification, statuses)

    states = badge_states(targets)
    full = summaries(targets)

    for index, target in enumerate(targets):
        notified = [entry for entry in history if entry[0] == index]
        expected_senders = sorted(
            {senders[sender].pk for _target, sender, _ in notified if sender is not None}
        )
        assert full[target]["notification_count"] == len(notified)
        assert full[target]["sender_ids"] == expected_senders
        if index in last:
            notification, statuses = last[index]
            assert full[target]["notification"]["id"] == notification.pk
            assert full[target]["notification"]["sender_id"] == notification.sender_id
        else:
            assert full[target]["notification"] is None
        assert states[target] == {key: full[target][key] for key in BADGE_KEYS}
        expected = Counter(last[index][1] if index in last else [])
        assert {k: v for k, v in states[target]["counts"].items() if v} == dict(expected)


def test_long_target_lists_are_split_where_the_database_limits_them(monkeypatch):
    # Oracle takes at most 1,000 values in an IN list (max_in_list_size()); PostgreSQL
    # gets the ids as one array and has no list to split.
    tasks = [Task.objects.create(title=f"t{index}") for index in range(5)]
    for index, task in enumerate(tasks):
        notify_with_statuses(task, [st.OPENED] * (index + 1))
    whole_states, whole = badge_states(tasks), summaries(tasks)
    monkeypatch.setattr(connection.ops, "max_in_list_size", lambda: 2)

    with CaptureQueriesContext(connection) as queries:
        states, split = badge_states(tasks), summaries(tasks)

    for task in tasks:
        assert states[task] == whole_states[task]
        assert split[task] == whole[task]
    assert [states[task]["total"] for task in tasks] == [1, 2, 3, 4, 5]
    lists = 0 if connection.vendor == "postgresql" else 3  # 2 + 2 + 1 ids
    assert queries.captured_queries[0]["sql"].count(" IN (") == lists


def test_badge_states_of_a_notification_without_deliveries(task):
    notification = notify_with_statuses(task, [st.SENT])
    notification.deliveries.all().delete()

    state = badge_states([task])[task]

    assert state == {key: summary(task)[key] for key in BADGE_KEYS}
    assert state["state"] is None and state["total"] == 0 and state["notification_count"] == 1


def test_badge_states_of_mixed_models_uuid_keys_and_equal_pks():
    task = Task.objects.create(pk=9002, title="T")
    comment = Comment.objects.create(pk=9002, task=task, body="C")
    uuid_task = UUIDTask.objects.create(title="UUID keyed")
    notify_with_statuses(task, [st.OPENED])
    notify_with_statuses(comment, [st.FAILED])
    notify_with_statuses(uuid_task, [st.DELIVERED, st.SENT])

    states = badge_states([task, comment, uuid_task])

    assert states[task]["state"] == "read"
    assert states[comment]["state"] == "error"
    assert states[uuid_task.pk]["label"] == "Delivered to 1 of 2"
    with pytest.raises(KeyError, match="several models"):
        states[task.pk]


def test_badge_state_labels_follow_the_active_language(task):
    notify_with_statuses(task, [st.OPENED, st.DELIVERED, st.SENT])

    with translation.override("ru"):
        label = badge_states([task])[task]["label"]

    assert label == "Прочитал 1 из 3"


@pytest.mark.parametrize("count", [2, 200])
def test_badge_states_cost_one_query_for_2_and_200_targets(count, django_assert_num_queries):
    comments = _make_targets(count)
    tasks = [Task.objects.create(title=f"t{index}") for index in range(count)]
    notify_with_statuses(tasks[0], [st.DELIVERED])
    badge_states(comments[:1])  # warms the content type cache, as any running site has it

    # one aggregate query for the targets of two models
    with django_assert_num_queries(1):
        states = badge_states([*comments, *tasks])

    assert [states[comment]["label"] for comment in comments[:2]] == [
        "Read by 1 of 2",
        "Read by 1 of 2; Error (1 of 2)",
    ]
    assert all(states[comment]["total"] == 2 for comment in comments)
    assert states[tasks[0]]["state"] == "delivered"
    assert all(states[task]["state"] is None for task in tasks[1:])


def test_badge_states_of_nothing_costs_nothing(django_assert_num_queries):
    with django_assert_num_queries(0):
        assert badge_states([]) == {}


@pytest.mark.parametrize("reader", [badge_states, summaries])
def test_a_target_that_is_not_a_saved_instance_is_refused_clearly(task, reader):
    with pytest.raises(TypeError, match="a target must be a model instance, not dict"):
        reader([task, {"pk": task.pk}])
    with pytest.raises(ValueError, match="is not saved: it has no status"):
        reader([task, Task(title="unsaved")])
