"""Personal data: what each entry point stores, and what is left after the purge.

A reader's whole story goes through the real entry points: the email is sent (through
anymail's test backend), its pixel is loaded, a link clicked, a file downloaded, the
provider reports an open and a click with the reader's IP address and browser, and a
delivery report and a read receipt arrive. Then every row of the app's tables is read
back as text and searched for the reader's IP address, user agent, address and the
notification's content:

- the IP address is stored only with ``STORE_IP_ADDRESSES``, and then only in
  ``DeliveryEvent.ip_address``, never in details;
- a user agent is cut to the column's 512 characters, whichever way it came;
- after the purge (delete or anonymise) nothing personal is left, and a pixel, link or
  webhook that comes back for an anonymised delivery records nothing new.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from notify_tracking.models import Attachment, Delivery, DeliveryEvent, Notification
from notify_tracking.reports import ingest_bytes
from notify_tracking.retention import purge
from notify_tracking.tracking import tokens
from tests.esp_payloads import NOW, post_sendgrid, send, sendgrid_event
from tests.reliability.events import dsn, mdn

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
]

READER = "carol.reader@example.org"
IP = "203.0.113.77"
ESP_IP = "198.51.100.23"
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) CarolsBrowser/7.1"
LINK = "https://tracker.example.com/tasks/42?ref=carol-private-board"
TEXT = "Carol, your salary review is on Friday."
HTML = f'<html><body><p>{TEXT} <a href="{LINK}">Open the task</a></p></body></html>'
FILE = ("carol-payslip.txt", b"carol payslip 2026")
PERSONAL = [READER, IP, ESP_IP, "CarolsBrowser", "carol-private-board", TEXT, FILE[0]]
DISPLAYED = "manual-action/MDN-sent-manually; displayed"


def app_tables_text() -> str:
    """Every row of every table of the app, as one text to search for personal data."""
    chunks = []
    with connection.cursor() as cursor:
        for model in (Notification, Attachment, Delivery, DeliveryEvent):
            table = connection.ops.quote_name(model._meta.db_table)
            cursor.execute(f"SELECT * FROM {table}")  # noqa: S608
            chunks.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(chunks)


@pytest.fixture
def tracked(settings):
    settings.NOTIFY_TRACKING = {**settings.NOTIFY_TRACKING, "TRACK_DOWNLOADS": True}
    return settings


def sent_to_reader(task, capture) -> Delivery:
    (delivery,) = send(task, [READER], capture, html=HTML, attachments=[FILE])
    # Sent two hours ago: nothing below is "too soon after sending" to be a person's.
    Delivery.objects.filter(pk=delivery.pk).update(sent_at=timezone.now() - dt.timedelta(hours=2))
    delivery.refresh_from_db()
    return delivery


def reader_story(delivery: Delivery, client, capture, *, user_agent: str = USER_AGENT) -> None:
    """The reader, the provider and the mail servers, through every entry point."""
    browser = {"HTTP_USER_AGENT": user_agent, "REMOTE_ADDR": IP}
    pixel = reverse("notify_tracking:open", args=[tokens.sign_open(delivery.token)])
    link = reverse("notify_tracking:click", args=[tokens.sign_click(delivery.token, LINK)])
    client.get(pixel, **browser)
    client.get(link, **browser)
    attachment = Attachment.objects.filter(notification=delivery.notification_id).first()
    if attachment is not None:
        token = tokens.sign_download(delivery.token, attachment.pk)
        client.get(reverse("notify_tracking:download", args=[token]), **browser)
    with capture(execute=True):
        post_sendgrid(
            client,
            [
                sendgrid_event(delivery, "open", NOW + 5, ip=ESP_IP, useragent=user_agent),
                sendgrid_event(
                    delivery, "click", NOW + 6, ip=ESP_IP, useragent=user_agent, url=LINK
                ),
            ],
        )
    at = timezone.now() - dt.timedelta(minutes=5)
    ingest_bytes(dsn(delivery, "failed", at, 1))
    ingest_bytes(
        mdn(delivery, DISPLAYED, at, 2).replace(b"Thunderbird 128.5.0", user_agent.encode())
    )


def sources_of(delivery: Delivery) -> set[str]:
    return set(delivery.events.values_list("source", flat=True))


def test_ip_addresses_are_not_stored_by_default(
    task, client, tracked, django_capture_on_commit_callbacks
):
    delivery = sent_to_reader(task, django_capture_on_commit_callbacks)
    reader_story(delivery, client, django_capture_on_commit_callbacks)

    assert {"pixel", "click", "download", "esp", "dsn", "mdn"} <= sources_of(delivery)
    assert not DeliveryEvent.objects.exclude(ip_address=None).exists()
    text = app_tables_text()
    assert IP not in text
    assert ESP_IP not in text


def test_ip_addresses_are_stored_only_where_asked(
    task, client, tracked, django_capture_on_commit_callbacks
):
    tracked.NOTIFY_TRACKING = {**tracked.NOTIFY_TRACKING, "STORE_IP_ADDRESSES": True}
    delivery = sent_to_reader(task, django_capture_on_commit_callbacks)
    reader_story(delivery, client, django_capture_on_commit_callbacks)

    stored = dict(
        delivery.events.exclude(ip_address=None).values_list("source", "ip_address").distinct()
    )
    assert stored == {"pixel": IP, "click": IP, "download": IP, "esp": ESP_IP}
    for event in DeliveryEvent.objects.all():
        assert IP not in repr(event.details) and ESP_IP not in repr(event.details)


def test_user_agents_are_truncated_whichever_way_they_come(
    task, client, tracked, django_capture_on_commit_callbacks
):
    delivery = sent_to_reader(task, django_capture_on_commit_callbacks)
    long_agent = USER_AGENT + " " + "x" * 3000
    reader_story(delivery, client, django_capture_on_commit_callbacks, user_agent=long_agent)

    agents = dict(delivery.events.exclude(user_agent="").values_list("source", "user_agent"))
    assert set(agents) == {"pixel", "click", "download", "esp", "mdn"}
    assert {len(agent) for agent in agents.values()} == {512}
    assert all("CarolsBrowser/7.1 xxx" in agent for agent in agents.values()), agents


def expire(delivery: Delivery) -> dt.datetime:
    """Make the delivery's notification older than its retention; return 'now'."""
    now = timezone.now()
    Notification.objects.filter(pk=delivery.notification_id).update(
        created_at=now - dt.timedelta(days=400)
    )
    return now


@pytest.mark.parametrize("mode", ["delete", "anonymise"])
def test_the_purge_leaves_nothing_personal(
    task, client, tracked, django_capture_on_commit_callbacks, mode
):
    tracked.NOTIFY_TRACKING = {**tracked.NOTIFY_TRACKING, "STORE_IP_ADDRESSES": True}
    delivery = sent_to_reader(task, django_capture_on_commit_callbacks)
    reader_story(delivery, client, django_capture_on_commit_callbacks)
    before = app_tables_text()
    assert all(value in before for value in PERSONAL), [v for v in PERSONAL if v not in before]

    with django_capture_on_commit_callbacks(execute=True):
        purge(now=expire(delivery), mode=mode)

    after = app_tables_text()
    assert [value for value in PERSONAL if value in after] == []
    assert Delivery.objects.filter(pk=delivery.pk).exists() is (mode == "anonymise")


def test_nothing_is_recorded_for_an_anonymised_delivery(
    task, client, tracked, django_capture_on_commit_callbacks
):
    tracked.NOTIFY_TRACKING = {**tracked.NOTIFY_TRACKING, "STORE_IP_ADDRESSES": True}
    delivery = sent_to_reader(task, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        purge(now=expire(delivery), mode="anonymise")
    anonymised = Delivery.objects.get(pk=delivery.pk)
    events_before = anonymised.events.count()

    # The reader opens the old email again; the provider resends an old webhook.
    browser = {"HTTP_USER_AGENT": USER_AGENT, "REMOTE_ADDR": IP}
    pixel = reverse("notify_tracking:open", args=[tokens.sign_open(delivery.token)])
    link = reverse("notify_tracking:click", args=[tokens.sign_click(delivery.token, LINK)])
    assert client.get(pixel, **browser).status_code == 200
    assert client.get(link, **browser)["Location"] == LINK  # the link still works
    with django_capture_on_commit_callbacks(execute=True):
        post_sendgrid(
            client, [sendgrid_event(delivery, "open", NOW + 9, ip=ESP_IP, useragent=USER_AGENT)]
        )

    assert anonymised.events.count() == events_before
    after = app_tables_text()
    assert [value for value in PERSONAL if value in after] == []


def test_a_late_report_records_nothing_for_an_anonymised_delivery(
    task, tracked, django_capture_on_commit_callbacks
):
    delivery = sent_to_reader(task, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        purge(now=expire(delivery), mode="anonymise")
    events_before = DeliveryEvent.objects.filter(delivery=delivery).count()

    at = timezone.now() - dt.timedelta(minutes=1)
    ingest_bytes(dsn(delivery, "failed", at, 7))
    ingest_bytes(mdn(delivery, DISPLAYED, at, 8))

    assert DeliveryEvent.objects.filter(delivery=delivery).count() == events_before
    assert READER not in app_tables_text()
