"""Retention: what the purge deletes or anonymises, and what it must leave alone."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import Q
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from notify_tracking import status as st
from notify_tracking.activity.filters import search
from notify_tracking.models import Attachment, Delivery, DeliveryEvent, Notification
from notify_tracking.retention import PLACEHOLDER_PREFIX, placeholder, purge, retention_rules
from notify_tracking.tasks import beat_schedule, purge_expired
from tests.activity_support import delivery_to, make_notification, record
from tests.testapp.models import Comment, UUIDTask

pytestmark = pytest.mark.django_db
NOW = timezone.make_aware(dt.datetime(2025, 6, 1, 12, 0, 0))
DAY = dt.timedelta(days=1)
SECOND = dt.timedelta(seconds=1)


def aged(target, address, age, **options):
    return make_notification(target, [address], age=age, now=NOW, **options)


def app_tables_text() -> str:
    """Every row of every table of the app, as one text to search for personal data."""
    models = (Notification, Attachment, Delivery, DeliveryEvent)
    chunks = []
    with connection.cursor() as cursor:
        for model in models:
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(model._meta.db_table)}")  # noqa: S608
            chunks.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(chunks)


# --- what expires ---------------------------------------------------------------------------


def test_nothing_inside_the_retention_window_is_deleted(task):
    kept_edge = aged(task, "edge@example.com", 45 * DAY)
    kept_young = aged(task, "young@example.com", 44 * DAY)
    expired = aged(task, "old@example.com", 45 * DAY + SECOND)
    report = purge(now=NOW)
    assert set(Notification.objects.values_list("pk", flat=True)) == {kept_edge.pk, kept_young.pk}
    assert report.notifications == 1
    assert not Delivery.objects.filter(notification_id=expired.pk).exists()


def test_the_setting_sets_the_window(task):
    aged(task, "a@example.com", 10 * DAY + SECOND)
    aged(task, "b@example.com", 10 * DAY)
    with override_settings(NOTIFY_TRACKING={"RETENTION_DAYS": 10}):
        purge(now=NOW)
    assert list(Delivery.objects.values_list("recipient", flat=True)) == ["b@example.com"]


def test_purge_deletes_events_deliveries_notifications_and_reports_counts(task):
    old = make_notification(task, ["a@example.com", "b@example.com"], age=50 * DAY, now=NOW)
    record(delivery_to(old, "a@example.com"), st.SENT, st.DELIVERED, st.OPENED, source="esp")
    record(delivery_to(old, "b@example.com"), st.FAILED, error="no route")
    young = aged(task, "c@example.com", DAY)
    record(young.deliveries.get(), st.SENT)

    report = purge(now=NOW)

    assert report.as_dict() == {
        "mode": "delete",
        "dry_run": False,
        "notifications": 1,
        "deliveries": 2,
        "events": 4,
        "attachments": 0,
    }
    assert report.summary() == (
        "1 notifications, 2 deliveries, 4 events deleted; 0 attachments removed"
    )
    assert list(Notification.objects.all()) == [young]
    assert list(DeliveryEvent.objects.values_list("kind", flat=True)) == ["sent"]


def test_attachment_files_are_removed(task, django_capture_on_commit_callbacks):
    old = aged(task, "a@example.com", 50 * DAY, attachments=[("report.txt", b"secret")])
    young = aged(task, "b@example.com", DAY, attachments=[("keep.txt", b"keep")])
    old_file = Path(old.attachments.get().file.path)
    young_file = Path(young.attachments.get().file.path)
    assert old_file.read_bytes() == b"secret"

    with django_capture_on_commit_callbacks(execute=True):
        report = purge(now=NOW)

    assert report.attachments == 1
    assert not old_file.exists()
    assert young_file.read_bytes() == b"keep"
    assert list(Attachment.objects.values_list("filename", flat=True)) == ["keep.txt"]


def test_files_stay_when_the_transaction_does_not_commit(task, django_capture_on_commit_callbacks):
    old = aged(task, "a@example.com", 50 * DAY, attachments=[("report.txt", b"secret")])
    path = Path(old.attachments.get().file.path)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        purge(now=NOW)
    assert callbacks  # the removal waits for the commit...
    assert path.exists()  # ...so a rolled-back purge loses no file


def test_dry_run_counts_and_changes_nothing(task):
    old = aged(task, "a@example.com", 50 * DAY, attachments=[("a.txt", b"x")])
    record(old.deliveries.get(), st.SENT)
    aged(task, "b@example.com", DAY)
    report = purge(now=NOW, dry_run=True)
    assert (report.notifications, report.deliveries, report.events, report.attachments) == (
        1,
        1,
        1,
        1,
    )
    assert report.summary().endswith("would be deleted; 1 attachments would be removed")
    assert Notification.objects.count() == 2
    assert DeliveryEvent.objects.count() == 1
    assert Attachment.objects.count() == 1


def deletes_from(sql: str, model) -> bool:
    table = connection.ops.quote_name(model._meta.db_table)
    return sql.split(" WHERE ")[0].split()[-1] == table


def test_purge_works_in_batches_of_short_transactions(task):
    for index in range(5):
        make_notification(
            task, [f"u{index}-{n}@example.com" for n in range(3)], age=50 * DAY, now=NOW
        )
    with CaptureQueriesContext(connection) as queries:
        report = purge(now=NOW, batch_size=2)
    assert (report.notifications, report.deliveries) == (5, 15)
    deletes = [q["sql"] for q in queries if q["sql"].startswith("DELETE FROM ")]
    delivery_deletes = [sql for sql in deletes if deletes_from(sql, Delivery)]
    notification_deletes = [sql for sql in deletes if deletes_from(sql, Notification)]
    # Notifications 2 + 2 + 1 at a time; their deliveries (6, 6, 3) 2 at a time.
    assert len(notification_deletes) == 3
    assert len(delivery_deletes) == 3 + 3 + 2
    assert all(len(re.findall(r"\d+", sql.split(" IN ")[-1])) <= 2 for sql in delivery_deletes)
    savepoints = [q["sql"] for q in queries if q["sql"].startswith("SAVEPOINT")]
    assert len(savepoints) == 8 + 3  # one transaction per batch (savepoints inside the test's)


def test_a_table_is_never_locked(task):
    aged(task, "a@example.com", 50 * DAY)
    with CaptureQueriesContext(connection) as queries:
        purge(now=NOW)
    assert not [q for q in queries if "LOCK TABLE" in q["sql"].upper()]


def test_the_celery_task_purges_and_is_scheduled(task):
    aged(task, "a@example.com", 400 * DAY)
    assert purge_expired.delay().get()["notifications"] == 1
    assert not Notification.objects.exists()
    assert (
        beat_schedule()["notify_tracking.purge_expired"]["task"] == "notify_tracking.purge_expired"
    )


# --- per target or sender --------------------------------------------------------------


def policy():
    """Comments a year, staff senders 10 days, UUID tasks for ever; the rest 45 days."""
    return [
        (Q(content_type__model="comment"), 365),
        ({"sender__is_staff": True}, 10),
        (Q(content_type__model="uuidtask"), None),
    ]


@override_settings(NOTIFY_TRACKING={"RETENTION_POLICY": "tests.test_retention.policy"})
def test_a_policy_gives_retention_per_target_and_sender(task, django_user_model):
    staff = django_user_model.objects.create_user("boss", "boss@example.com", "pw", is_staff=True)
    comment = Comment.objects.create(task=task, body="hi")
    remote = UUIDTask.objects.create(title="remote")
    aged(comment, "comment-100d@example.com", 100 * DAY)
    aged(comment, "comment-366d@example.com", 366 * DAY)
    aged(task, "task-100d@example.com", 100 * DAY)
    aged(task, "task-44d@example.com", 44 * DAY)
    aged(task, "staff-11d@example.com", 11 * DAY, sender=staff)
    aged(task, "staff-9d@example.com", 9 * DAY, sender=staff)
    aged(comment, "staff-comment-100d@example.com", 100 * DAY, sender=staff)  # first rule wins
    aged(remote, "remote-3000d@example.com", 3000 * DAY)

    report = purge(now=NOW)

    assert sorted(Delivery.objects.values_list("recipient", flat=True)) == [
        "comment-100d@example.com",
        "remote-3000d@example.com",
        "staff-9d@example.com",
        "staff-comment-100d@example.com",
        "task-44d@example.com",
    ]
    assert report.notifications == 3


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([("comment", 3)], "the filter must be a Q object or a dict"),
        ([(Q(), 0)], "days must be a whole number of at least 1, or None"),
        ([(Q(), "30")], "days must be a whole number"),
        ([Q()], "must be a (filter, days) pair"),
    ],
)
def test_a_bad_policy_fails_naming_the_rule(rules, message):
    with (
        override_settings(NOTIFY_TRACKING={"RETENTION_POLICY": lambda: rules}),
        pytest.raises(ImproperlyConfigured, match=re.escape(message)) as raised,
    ):
        retention_rules()
    assert "RETENTION_POLICY'] rule 0" in str(raised.value)


def test_the_policy_setting_is_checked(settings):
    from notify_tracking.checks import check_settings

    settings.NOTIFY_TRACKING = {"RETENTION_POLICY": "no.such.policy", "RETENTION_MODE": "shred"}
    messages = [error.msg for error in check_settings()]
    assert any('[\'RETENTION_MODE\'] must be "delete" or "anonymise"' in m for m in messages)
    assert any("['RETENTION_POLICY'] cannot import 'no.such.policy'" in m for m in messages)


# --- anonymisation ------------------------------------------------------------------------


PERSONAL = [
    "alice@example.com",
    "Alice Liddell",
    "Mozilla/5.0 (Secret Agent)",
    "203.0.113.9",
    "Quarterly salary review",
    "Your salary is going up",
    "<p>Your salary",
    "bob@other.test",
]


def personal_notification(task, user):
    from notify_tracking import Recipient, notify

    notification = notify(
        task,
        [Recipient("alice@example.com", name="Alice Liddell", user=user), "bob@other.test"],
        subject="Quarterly salary review",
        text="Your salary is going up",
        html="<p>Your salary is going up</p>",
        attachments=[("salary.pdf", b"%PDF secret")],
    )
    alice = delivery_to(notification, "alice@example.com")
    record(alice, st.SENT, st.DELIVERED)
    record(
        alice,
        st.OPENED,
        source="pixel",
        user_agent="Mozilla/5.0 (Secret Agent)",
        ip_address="203.0.113.9",
        details={"seen_from": "alice@example.com"},
    )
    record(
        delivery_to(notification, "bob@other.test"),
        st.BOUNCED,
        source="dsn",
        error="550 5.1.1 <bob@other.test>: Recipient address rejected (cc alice@example.com)",
    )
    return notification


def test_anonymise_removes_personal_data_and_keeps_statuses_and_counts(
    task, user, django_capture_on_commit_callbacks
):
    old = personal_notification(task, user)
    make_notification(task, ["recent@example.com"], subject="Recent")  # inside the window
    Notification.objects.filter(pk=old.pk).update(created_at=NOW - 50 * DAY)
    before = {
        d.pk: (d.status, d.open_count, d.sent_at, d.delivered_at, d.first_opened_at, d.failed_at)
        for d in old.deliveries.all()
    }
    file_path = Path(old.attachments.get().file.path)
    text_before = app_tables_text()
    assert all(value in text_before for value in PERSONAL)

    with django_capture_on_commit_callbacks(execute=True):
        report = purge(now=NOW, mode="anonymise")

    text_after = app_tables_text()
    leaks = [value for value in PERSONAL if value in text_after]
    assert leaks == []
    assert "recent@example.com" in text_after  # the young notification is untouched
    assert not file_path.exists()
    assert (report.notifications, report.deliveries, report.events, report.attachments) == (
        1,
        2,
        4,
        1,
    )
    after = {
        d.pk: (d.status, d.open_count, d.sent_at, d.delivered_at, d.first_opened_at, d.failed_at)
        for d in Delivery.objects.filter(notification=old)
    }
    assert after == before
    alice = Delivery.objects.get(pk=delivery_to(old, placeholder("alice@example.com")).pk)
    assert alice.user is None and alice.recipient_name == ""
    bob = Delivery.objects.get(recipient=placeholder("bob@other.test"))
    assert bob.status == st.BOUNCED
    assert bob.error == (
        "550 5.1.1 <<address removed>>: Recipient address rejected (cc <address removed>)"
    )
    assert DeliveryEvent.objects.filter(delivery__notification=old).count() == 4
    assert Notification.objects.filter(pk=old.pk).exists()


def test_the_placeholder_is_stable_and_support_can_still_find_it(task):
    first = aged(task, "Carol@Example.com", 60 * DAY)
    second = aged(task, "carol@example.com", 50 * DAY)
    purge(now=NOW, mode="anonymise")
    placeholders = set(Delivery.objects.values_list("recipient", flat=True))
    assert placeholders == {placeholder("carol@example.com")}
    assert next(iter(placeholders)).startswith(PLACEHOLDER_PREFIX)
    assert "carol" not in next(iter(placeholders)).lower()
    found = search({"recipient": "carol@example.com"})
    assert {d.notification_id for d in found} == {first.pk, second.pk}


def test_support_finds_anonymised_deliveries_after_the_key_changes(task, client, admin_user):
    """The key of the placeholder is SECRET_KEY: one made before a rotation is found
    while the old key is in SECRET_KEY_FALLBACKS, by the activity log and the admin."""
    before = aged(task, "dave@example.com", 60 * DAY)
    with override_settings(SECRET_KEY="k" * 50 + "-old", SECRET_KEY_FALLBACKS=[]):
        purge(now=NOW, mode="anonymise")
    after = aged(task, "Dave@Example.com", 50 * DAY)
    with override_settings(SECRET_KEY="k" * 50 + "-new", SECRET_KEY_FALLBACKS=["k" * 50 + "-old"]):
        purge(now=NOW, mode="anonymise")
        assert len(set(Delivery.objects.values_list("recipient", flat=True))) == 2
        found = search({"recipient": "dave@example.com"})
        assert {d.notification_id for d in found} == {before.pk, after.pk}
        client.force_login(admin_user)  # a session of the new key
        response = client.get("/admin/notify_tracking/delivery/", {"q": "dave@example.com"})
        shown = {d.notification_id for d in response.context["cl"].result_list}
        assert shown == {before.pk, after.pk}
    with override_settings(SECRET_KEY="k" * 50 + "-new", SECRET_KEY_FALLBACKS=[]):
        found = search({"recipient": "dave@example.com"})  # the old key dropped
        assert {d.notification_id for d in found} == {after.pk}


def test_anonymising_writes_without_bulk_updates_case_expressions(task):
    """bulk_update's CASE expressions made the purge five times slower (measured):
    PostgreSQL gets UPDATE … FROM (VALUES …), a statement for many deliveries; other
    databases one UPDATE per delivery."""

    def updates_for(recipients: int) -> list[str]:
        Notification.objects.all().delete()
        addresses = [f"user{n}@example.com" for n in range(recipients)]
        make_notification(task, addresses, age=50 * DAY, now=NOW)
        with CaptureQueriesContext(connection) as queries:
            report = purge(now=NOW, mode="anonymise")
        assert report.deliveries == recipients
        return [
            q["sql"] for q in queries if q["sql"].startswith('UPDATE "notify_tracking_delivery')
        ]

    few, many = updates_for(4), updates_for(40)
    assert not [sql for sql in few + many if "CASE WHEN" in sql]
    if connection.vendor == "postgresql":
        assert len(many) == len(few)
        assert any("FROM (VALUES" in sql for sql in many)


def test_anonymising_twice_changes_nothing_more(task):
    aged(task, "dave@example.com", 60 * DAY)
    purge(now=NOW, mode="anonymise")
    snapshot = app_tables_text()
    report = purge(now=NOW, mode="anonymise")
    assert (report.notifications, report.deliveries, report.events) == (0, 0, 0)
    assert app_tables_text() == snapshot


def test_the_mode_setting_chooses_anonymise(task):
    aged(task, "erin@example.com", 60 * DAY)
    with override_settings(NOTIFY_TRACKING={"RETENTION_MODE": "anonymise"}):
        report = purge(now=NOW)
    assert report.mode == "anonymise"
    assert list(Delivery.objects.values_list("recipient", flat=True)) == [
        placeholder("erin@example.com")
    ]


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode must be one of delete, anonymise"):
        purge(mode="shred")


# --- the command --------------------------------------------------------------------------


def run_purge(*args) -> str:
    from io import StringIO

    out = StringIO()
    call_command("notify_tracking_purge", *args, stdout=out)
    return out.getvalue()


def test_the_command_reports_what_it_removed(task):
    make_notification(task, ["a@example.com", "b@example.com"], age=400 * DAY)
    assert run_purge("--dry-run") == (
        "Dry run: 1 notifications, 2 deliveries, 0 events would be deleted; "
        "0 attachments would be removed.\n"
    )
    assert Delivery.objects.count() == 2
    assert (
        run_purge() == "1 notifications, 2 deliveries, 0 events deleted; 0 attachments removed.\n"
    )
    assert not Delivery.objects.exists()


def test_the_command_anonymises(task):
    make_notification(task, ["a@example.com"], age=400 * DAY)
    assert run_purge("--anonymise", "--batch-size", "1").startswith(
        "1 notifications, 1 deliveries, 0 events anonymised"
    )
    assert Delivery.objects.get().recipient == placeholder("a@example.com")


def test_the_command_refuses_a_bad_batch_size():
    with pytest.raises(CommandError, match="--batch-size must be at least 1"):
        run_purge("--batch-size", "0")


def group_policy():
    return [({"sender__groups__name__in": ["legal", "hr"]}, 10)]


@override_settings(NOTIFY_TRACKING={"RETENTION_POLICY": "tests.test_retention.group_policy"})
def test_a_rule_across_a_many_to_many_relation_counts_each_notification_once(
    task, django_user_model
):
    from django.contrib.auth.models import Group

    lawyer = django_user_model.objects.create_user("lawyer", "l@example.com", "pw")
    lawyer.groups.add(Group.objects.create(name="legal"), Group.objects.create(name="hr"))
    aged(task, "a@example.com", 11 * DAY, sender=lawyer)
    aged(task, "b@example.com", 11 * DAY)  # no sender: the default 45 days
    assert purge(now=NOW, dry_run=True).notifications == 1
    report = purge(now=NOW)
    assert (report.notifications, report.deliveries) == (1, 1)
    assert list(Delivery.objects.values_list("recipient", flat=True)) == ["b@example.com"]
