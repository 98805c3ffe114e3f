"""notify(): validation, what it writes, and that it sends only after commit."""

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core import mail
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import transaction
from django.test import override_settings

from notify_tracking import Recipient, notify
from notify_tracking.models import Delivery, Notification, TrackingPreference
from tests.testapp.models import Task, Ticket, UUIDTask

pytestmark = pytest.mark.django_db


def send(*args, capture, **kwargs):
    with capture(execute=True):
        return notify(*args, **kwargs)


def test_creates_one_queued_delivery_per_recipient(task, user):
    notification = notify(task, [user, "bob@example.com"], subject="New comment", text="Hi")

    assert notification.target == task
    assert notification.object_id == str(task.pk)
    deliveries = list(notification.deliveries.order_by("pk"))
    assert [(d.recipient, d.user, d.channel, d.status) for d in deliveries] == [
        ("alice@example.com", user, "email", "queued"),
        ("bob@example.com", None, "email", "queued"),
    ]
    assert all(d.email_message_id.endswith("@tracker.example.com>") for d in deliveries)
    assert len({d.email_message_id for d in deliveries}) == 2


def test_uuid_primary_key_targets_work():
    target = UUIDTask.objects.create(title="uuid")
    notification = notify(target, ["a@example.com"], text="Hi")
    assert Notification.objects.get(object_id=str(target.pk)).target == target
    assert notification.content_type == ContentType.objects.get_for_model(UUIDTask)


@pytest.mark.parametrize("key", ["PROJ/123", "ops:42", "a b", "ключ%20", "K" * 64])
def test_text_keyed_targets_work(key):
    target = Ticket.objects.create(key=key)
    notify(target, ["a@example.com"], text="Hi")
    assert Notification.objects.get(object_id=key).target == target


def test_duplicate_recipients_are_sent_once(task, user):
    notification = notify(
        task, [user, "ALICE@example.com", " alice@example.com", Recipient("alice@example.com")],
        text="Hi",
    )  # fmt: skip
    assert notification.deliveries.count() == 1
    assert notification.deliveries.get().user == user  # the first mention wins


def test_sends_only_after_the_transaction_commits(task, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        notify(task, ["bob@example.com"], subject="S", text="T")
        assert mail.outbox == []
        assert Delivery.objects.get().status == "queued"
    assert len(mail.outbox) == 1
    assert Delivery.objects.get().status == "sent"


def test_a_rolled_back_transaction_sends_nothing(task, django_capture_on_commit_callbacks):
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        notify(task, ["bob@example.com"], text="T")
        raise RuntimeError("caller failed")
    assert callbacks == []
    assert mail.outbox == []
    assert not Delivery.objects.exists()


def test_the_email_sent(task, user, django_capture_on_commit_callbacks):
    send(
        task, [user], subject="Comment on #1", text="plain", html="<p>html</p>",
        capture=django_capture_on_commit_callbacks,
    )  # fmt: skip
    [message] = mail.outbox
    delivery = Delivery.objects.get()
    assert message.to == ["alice@example.com"]
    assert message.subject == "Comment on #1"
    assert message.body == "plain"
    assert message.alternatives[0][1] == "text/html"
    assert "<p>html</p>" in message.alternatives[0][0]
    assert message.extra_headers["Message-ID"] == delivery.email_message_id
    assert "Disposition-Notification-To" not in message.extra_headers
    assert message.from_email == "tracker@example.com"


def test_attachments_are_stored_and_sent(task, django_capture_on_commit_callbacks):
    send(
        task, ["bob@example.com"], text="see file",
        attachments=[("notes.txt", b"hello", "text/plain"), ContentFile(b"\x89PNG", name="x.png")],
        capture=django_capture_on_commit_callbacks,
    )  # fmt: skip
    [message] = mail.outbox
    assert [(a[0], a[1]) for a in message.attachments] == [
        ("notes.txt", "hello"),
        ("x.png", b"\x89PNG"),
    ]


def test_sender_preference_asks_for_read_receipts(task, user, django_capture_on_commit_callbacks):
    TrackingPreference.objects.create(user=user, request_read_receipts=True)
    send(
        task, ["bob@example.com"], text="T", sender=user, capture=django_capture_on_commit_callbacks
    )
    notification = Notification.objects.get()
    assert notification.request_read_receipt is True
    assert notification.sender == user
    assert mail.outbox[0].extra_headers["Disposition-Notification-To"] == "tracker@example.com"


def test_explicit_argument_beats_the_preference(task, user):
    TrackingPreference.objects.create(user=user, request_read_receipts=True)
    notification = notify(
        task, ["b@example.com"], text="T", sender=user, request_read_receipt=False
    )
    assert notification.request_read_receipt is False


def test_recipient_who_refused_tracking_is_not_tracked(task, user, django_user_model):
    TrackingPreference.objects.create(user=user, allow_tracking=False)
    other = django_user_model.objects.create_user("carol", "carol@example.com")
    notification = notify(task, [user, other, "ext@example.com"], text="T")
    tracked = dict(notification.deliveries.values_list("recipient", "track_opens"))
    assert tracked == {
        "alice@example.com": False,
        "carol@example.com": True,
        "ext@example.com": True,
    }
    assert not notification.deliveries.get(recipient="alice@example.com").track_clicks


@override_settings(NOTIFY_TRACKING={"TRACK_OPENS": False})
def test_tracking_switched_off_globally(task):
    notification = notify(task, ["b@example.com"], text="T")
    assert notification.track_opens is False
    assert notification.deliveries.get().track_opens is False


# --- bad input: a clear error naming the value, and nothing written -----------------


def bad_calls(task, user):
    unsaved = Task(title="unsaved")
    too_long = Ticket.objects.create(key="K" * 65)  # the column holds 64 characters
    return [
        (dict(target=too_long, recipients=["a@example.com"], text="T"), ValueError, "longer than"),
        (dict(target=task, recipients=[], text="T"), ValueError, "no recipients"),
        (dict(target=unsaved, recipients=["a@example.com"], text="T"), ValueError, "not saved"),
        (dict(target="task", recipients=["a@example.com"], text="T"), TypeError, "model instance"),
        (
            dict(target=task, recipients=["a@example.com"], text="T", channel="pigeon"),
            ValueError,
            "unknown channel 'pigeon'",
        ),
        (dict(target=task, recipients=["not-an-address"], text="T"), ValidationError, "not-an-add"),
        (dict(target=task, recipients=["a@example.com"], text=b"bytes"), TypeError, "text must be"),
        (dict(target=task, recipients=["a@example.com"], text="  "), ValueError, "text is empty"),
        (dict(target=task, recipients=["a@example.com"], text=None), TypeError, "text must be"),
        (
            dict(target=task, recipients=["a@example.com"], text="T", html=5),
            TypeError,
            "html must be",
        ),
        (
            dict(target=task, recipients=["a@example.com"], subject="a\nBcc: x", text="T"),
            ValueError,
            "one line",
        ),
        (dict(target=task, recipients="a@example.com", text="T"), TypeError, "wrap a single one"),
        (dict(target=task, recipients=user, text="T"), TypeError, "wrap a single one"),
        (dict(target=task, recipients=[42], text="T"), TypeError, "not int"),
        (
            dict(target=task, recipients=[Recipient("a@example.com", channel="sms")], text="T"),
            ValueError,
            "unknown channel 'sms'",
        ),
        (
            dict(target=task, recipients=["a@example.com"], text="T", attachments=["x.txt"]),
            TypeError,
            "attachments",
        ),
        (
            dict(target=task, recipients=["a@example.com"], text="T", attachments=[("", b"")]),
            ValueError,
            "invalid file name",
        ),
    ]


def test_bad_input_raises_a_clear_error_and_writes_nothing(task, user, django_user_model):
    no_email = django_user_model.objects.create_user("noemail", "")
    cases = [
        *bad_calls(task, user),
        (
            dict(target=task, recipients=[no_email], text="T"),
            ValueError,
            "'noemail' has no address",
        ),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            notify(kwargs.pop("target"), kwargs.pop("recipients"), **kwargs)
        assert not Notification.objects.exists(), kwargs
        assert not Delivery.objects.exists(), kwargs
