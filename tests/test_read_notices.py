"""Senders who asked are told when recipients read: at once, or in a daily digest."""

import datetime as dt
import zoneinfo

import pytest
from django.core import mail
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from notify_tracking import notify, read_notices
from notify_tracking.checks import check_settings
from notify_tracking.models import Delivery, TrackingPreference
from notify_tracking.read_notices import (
    LocalCrontab,
    digest_schedule,
    send_digests,
    send_instant_notice,
)
from notify_tracking.service import NewEvent, record_event, record_events
from notify_tracking.tasks import beat_schedule, send_read_digests
from tests.esp_payloads import NOW, post_sendgrid, sendgrid_event
from tests.esp_payloads import send as send_via_anymail
from tests.testapp.models import Task

pytestmark = pytest.mark.django_db


@pytest.fixture
def sender(django_user_model):
    return django_user_model.objects.create_user(
        "sam", "sam@example.com", "pw", first_name="Sam", last_name="Sender"
    )


def wants(user, read_notice):
    TrackingPreference.objects.update_or_create(user=user, defaults={"read_notice": read_notice})


def sent(target, recipients, sender, capture, subject="Build failed"):
    with capture(execute=True):
        notification = notify(target, recipients, subject=subject, text="Hi", sender=sender)
    mail.outbox.clear()  # keep only what the tests below send
    return list(notification.deliveries.order_by("pk"))


def read(delivery, capture, *, kind="opened", machine=False, at=None):
    with capture(execute=True):
        record_event(
            delivery,
            kind,
            source="pixel",
            is_machine=machine,
            occurred_at=at or timezone.now(),
            user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
        )


def notices_to(address):
    return [message for message in mail.outbox if message.to == [address]]


# --- instant ------------------------------------------------------------------------


def test_the_first_read_is_told_once(task, sender, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    wants(sender, "instant")
    bob, carol = sent(task, ["bob@example.com", "carol@example.com"], sender, capture)

    read(bob, capture)
    read(bob, capture)
    read(bob, capture, kind="clicked")

    (notice,) = notices_to("sam@example.com")
    assert notice.subject == "bob@example.com read “Build failed”"
    assert "bob@example.com <bob@example.com> read it on" in notice.body
    assert "“Read” means a person opened the email" in notice.body
    html, mimetype = notice.alternatives[0]
    assert mimetype == "text/html" and "<strong>bob@example.com</strong>" in html
    assert Delivery.objects.get(pk=bob.pk).read_notice_sent_at is not None
    assert Delivery.objects.get(pk=carol.pk).read_notice_sent_at is None

    read(carol, capture, kind="clicked")
    assert [m.subject for m in notices_to("sam@example.com")][1] == (
        "carol@example.com opened a link in “Build failed”"
    )


def test_machine_opens_never_tell(task, sender, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    wants(sender, "instant")
    (bob,) = sent(task, ["bob@example.com"], sender, capture)

    read(bob, capture, machine=True)
    with override_settings(NOTIFY_TRACKING={"COUNT_MACHINE_OPENS": True}):
        read(bob, capture, machine=True)  # now it moves the status, still not a person
    assert Delivery.objects.get(pk=bob.pk).status == "opened"
    assert notices_to("sam@example.com") == []

    read(bob, capture, kind="clicked")  # a person's click
    assert len(notices_to("sam@example.com")) == 1


def test_a_batch_of_first_reads_tells_each_sender_who_asked_with_one_query(
    task, sender, django_user_model, django_capture_on_commit_callbacks, monkeypatch
):
    capture = django_capture_on_commit_callbacks
    wants(sender, "instant")
    quiet = django_user_model.objects.create_user("quinn", "quinn@example.com", "pw")
    asked = sent(task, [f"r{n}@example.com" for n in range(6)], sender, capture)
    not_asked = sent(task, ["x@example.com"], quiet, capture)
    when = timezone.now()
    batch = [
        NewEvent(delivery_id=d.pk, kind="opened", source="pixel", occurred_at=when)
        for d in [*asked, *not_asked]
    ]
    # A person's open, then a proxy's in the same batch: the person read it.
    batch.append(
        NewEvent(
            delivery_id=asked[0].pk,
            kind="opened",
            source="pixel",
            occurred_at=when + dt.timedelta(seconds=5),
            is_machine=True,
        )
    )

    with capture(execute=False) as callbacks:
        record_events(batch)
    enqueued = []
    monkeypatch.setattr(read_notices, "_enqueue_instant", enqueued.append)
    with CaptureQueriesContext(connection) as queries:
        for callback in callbacks:
            callback()
    assert len(queries) == 1  # who of them asked: one look-up for the batch
    assert sorted(enqueued) == sorted(d.pk for d in asked)

    monkeypatch.undo()
    for callback in callbacks:  # now with the real task (eager here)
        callback()
    assert sorted(m.subject for m in notices_to("sam@example.com")) == sorted(
        f"r{n}@example.com read “Build failed”" for n in range(6)
    )
    assert notices_to("quinn@example.com") == []


@pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning")
def test_a_read_reported_by_the_esp_tells_too(
    task, sender, client, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    wants(sender, "instant")
    (bob,) = send_via_anymail(task, ["bob@example.com"], capture, sender=sender)
    mail.outbox.clear()
    human = sendgrid_event(bob, "open", NOW + 60, useragent="Mozilla/5.0 (X11; Linux) Firefox")
    machine = sendgrid_event(bob, "open", NOW + 5, sg_machine_open=True, useragent="Mozilla/5.0")
    with capture(execute=True):
        post_sendgrid(client, [machine])
    assert notices_to("sam@example.com") == []
    with capture(execute=True):
        post_sendgrid(client, [human])
    assert len(notices_to("sam@example.com")) == 1


def test_senders_who_did_not_ask_are_not_told(task, sender, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    (bob,) = sent(task, ["bob@example.com"], sender, capture)  # no preference: never
    read(bob, capture)
    wants(sender, "digest")
    (carol,) = sent(task, ["carol@example.com"], sender, capture)
    read(carol, capture)
    assert mail.outbox == []


def test_two_workers_racing_send_one_notice(task, sender, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    wants(sender, "never")
    (bob,) = sent(task, ["bob@example.com"], sender, capture)
    read(bob, capture)

    assert [send_instant_notice(bob.pk), send_instant_notice(bob.pk)] == [True, False]
    assert len(notices_to("sam@example.com")) == 1


@override_settings(EMAIL_BACKEND="tests.test_read_notices.BrokenBackend")
def test_a_notice_that_could_not_be_sent_is_not_marked_sent(
    task, sender, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    with override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend"):
        (bob,) = sent(task, ["bob@example.com"], sender, capture)
    read(bob, capture)

    with pytest.raises(OSError):
        send_instant_notice(bob.pk)
    assert Delivery.objects.get(pk=bob.pk).read_notice_sent_at is None


class BrokenBackend:
    """An email backend whose server is down."""

    def __init__(self, *args, **kwargs):
        pass

    def send_messages(self, messages):
        raise OSError("connection refused")


# --- digest -------------------------------------------------------------------------


def test_the_digest_lists_every_unreported_read_grouped_by_notification(
    django_user_model, sender, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    wants(sender, "digest")
    quiet = django_user_model.objects.create_user("quinn", "quinn@example.com", "pw")
    wants(quiet, "digest")
    login = Task.objects.create(title="Fix the login page")
    docs = Task.objects.create(title="Write the docs")
    bob, carol, dave = sent(
        login, ["bob@example.com", "carol@example.com", "dave@example.com"], sender, capture
    )
    (erin,) = sent(docs, ["erin@example.com"], sender, capture, subject="Docs review")
    sent(docs, ["bob@example.com"], quiet, capture, subject="Nobody reads me")
    start = timezone.now()
    read(carol, capture, at=start + dt.timedelta(minutes=5))
    read(bob, capture, at=start + dt.timedelta(minutes=1), kind="clicked")
    read(dave, capture, machine=True)  # automated: not a read
    read(erin, capture, at=start + dt.timedelta(minutes=9))

    assert send_read_digests.delay().get() == 1

    (digest,) = mail.outbox
    assert digest.to == ["sam@example.com"]
    assert digest.subject == "Read digest: 3 new reads"
    body = digest.body
    assert body.index("“Docs review”") < body.index("“Build failed”")  # newest first
    assert body.index("bob@example.com <bob@example.com> opened a link") < body.index(
        "carol@example.com <carol@example.com> read it"
    )
    assert "dave@example.com" not in body
    assert "erin@example.com <erin@example.com> read it" in body
    marked = Delivery.objects.filter(read_notice_sent_at__isnull=False)
    assert set(marked.values_list("pk", flat=True)) == {bob.pk, carol.pk, erin.pk}

    # The next digest holds only what was read since.
    mail.outbox.clear()
    assert send_digests() == 0
    assert mail.outbox == []
    read(dave, capture)
    assert send_digests() == 1
    assert mail.outbox[0].subject == "Read digest: 1 new read"


def test_no_reads_no_digest(task, sender, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    wants(sender, "digest")
    sent(task, ["bob@example.com"], sender, capture)
    assert send_digests() == 0
    assert mail.outbox == []


@override_settings(TIME_ZONE="Europe/Paris", NOTIFY_TRACKING={"DIGEST_TIME": "08:30"})
def test_the_digest_runs_daily_at_digest_time_in_the_projects_time_zone():
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    now = dt.datetime(2024, 6, 3, 8, 0, tzinfo=paris)  # summer: Paris is UTC+2
    schedule = LocalCrontab(minute=30, hour=8, nowfun=lambda: now)
    last_run = dt.datetime(2024, 6, 2, 8, 30, tzinfo=paris)
    assert schedule.remaining_estimate(last_run) == dt.timedelta(minutes=30)
    assert schedule.is_due(last_run)[0] is False

    at_half_past = LocalCrontab(minute=30, hour=8, nowfun=lambda: now.replace(minute=30))
    assert at_half_past.is_due(last_run)[0] is True

    entry = beat_schedule()["notify_tracking.send_read_digests"]
    assert entry["task"] == "notify_tracking.send_read_digests"
    assert entry["schedule"] == digest_schedule()
    assert (entry["schedule"].hour, entry["schedule"].minute) == ({8}, {30})
    assert entry["schedule"].tz == paris


@pytest.mark.parametrize("value", ["8am", "24:00", "08:60", 800, ""])
def test_a_bad_digest_time_fails_the_system_check(value):
    with override_settings(NOTIFY_TRACKING={"DIGEST_TIME": value}):
        errors = check_settings()
    assert [e.msg for e in errors] == [
        "NOTIFY_TRACKING['DIGEST_TIME'] must be a time of day as 'HH:MM', such as '08:00'"
    ]
