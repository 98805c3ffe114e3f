"""Create the demo's users, contact, tasks and comments, once; running it again changes nothing.

Then send the seeded notifications (here, synchronously: the worker is not running
yet) and play what their recipients did with them through the app's own entry
points, so that the pages show each kind of status from the first start:

- a **read**: Bob's mail program loads the tracking pixel of the "new task" email of
  the first task (a GET of its pixel URL with a mail program's user agent);
- a **click**: Bob clicks "Reply on the task" in the email of Alice's comment (a GET
  of the tracked link, which redirects to the comment);
- a **bounce**: Dana's mail server sends back a delivery status notification
  (RFC 3464, "mailbox full") for Alice's comment, fed to ``notify_tracking.reports``
  as an MTA would pipe it;
- a **machine open**: Apple's Mail Privacy Protection proxy (user agent exactly
  ``Mozilla/5.0``) loads the pixel of Bob's comment for Carol two seconds after it
  was sent: recorded as possibly automatic, not as a read.

The story takes place in the past, from three hours to forty minutes before the
seed runs: while a step is played, the clock the app reads
(``django.utils.timezone.now``) is set back to that step's time, so that a read
comes minutes after its email was sent, as a person's does. (A pixel loaded within
``SCANNER_WINDOW_SECONDS`` of sending is classified as a link scanner's.) Nothing
writes a status directly: each one comes from a send, a request to a tracking URL or
a report. Each reaction is played once: it is skipped when its delivery already
has such an event. docs/demo.md tells how to do each by hand.

Demo only: the passwords below are public (the login page shows them).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import format_datetime
from html import unescape
from unittest import mock
from urllib.parse import urlsplit

from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.management.base import BaseCommand
from django.db import transaction
from django.test import Client
from django.utils import timezone

from notify_tracking import status as st
from notify_tracking.models import Delivery, EventSource, Notification
from notify_tracking.reports import ingest_bytes
from notify_tracking.sending import send_deliveries
from notify_tracking.tracking.pending import apply_pending_opens
from notify_tracking.tracking.policy import base_url
from notify_tracking.tracking.rewrite import tracked_content

from ... import notifications
from ...models import Comment, Contact, Task

ADMIN = ("admin", "admin")  # username, password
STAFF_PASSWORD = "demo"
STAFF = [
    # username, first name, last name
    ("alice", "Alice", "Martin"),
    ("bob", "Bob", "Chen"),
    ("carol", "Carol", "Diaz"),
]
CONTACT = ("Dana Vendor", "dana@vendor.example")
EMAIL_CHANNEL = "email"

READ, CLICK, MACHINE_OPEN, BOUNCE = "read", "click", "machine open", "bounce"
#: A person's mail program (Thunderbird) and browser (Firefox).
MAIL_PROGRAM = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.3.0"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0"
#: The whole user agent of Apple's Mail Privacy Protection proxy.
APPLE_MPP = "Mozilla/5.0"
DANA_MTA = "mx.vendor.example"


@dataclass(frozen=True)
class Reaction:
    """What the recipient ``address`` did with their email, ``after`` it was sent."""

    address: str
    action: str
    after: dt.timedelta


TASKS = [
    {
        "title": "Login page rejects valid passwords",
        "description": "Since Monday's deploy, some users cannot log in with a correct password.",
        "created_by": "alice",
        "assignee": "bob",
        "watchers": ["alice", "carol"],
        "contacts": True,
        "minutes_ago": 180,
        "reactions": [Reaction("bob@example.com", READ, dt.timedelta(minutes=12))],
        "comments": [
            {
                "author": "alice",
                "body": "Reproduced in Firefox and Chrome: passwords with a trailing space fail.",
                "minutes_ago": 120,
                "reactions": [
                    Reaction("bob@example.com", CLICK, dt.timedelta(minutes=5)),
                    Reaction("dana@vendor.example", BOUNCE, dt.timedelta(seconds=40)),
                ],
            },
            {
                "author": "bob",
                "body": "Found it: the new form strips whitespace. A fix is on its way.",
                "minutes_ago": 60,
                "reactions": [
                    Reaction("carol@example.com", MACHINE_OPEN, dt.timedelta(seconds=2)),
                ],
            },
        ],
    },
    {
        "title": "Write the release notes for 2.4",
        "description": "One paragraph per visible change, with screenshots.",
        "created_by": "carol",
        "assignee": "carol",
        "watchers": ["bob"],
        "contacts": False,
        "minutes_ago": 50,
        "reactions": [],
        "comments": [
            {
                "author": "bob",
                "body": "Don't forget the new export button.",
                "minutes_ago": 40,
                "reactions": [],
            }
        ],
    },
]


class Command(BaseCommand):
    help = (
        "Create the demo data (users, an external contact, tasks, comments) if missing, "
        "send its notifications, and play a read, a click, a machine open and a bounce."
    )

    def handle(self, *args, **options):
        with transaction.atomic():
            users = {name: self.staff(name, *names) for name, *names in STAFF}
            users["admin"] = self.admin()
            name, email = CONTACT
            contact, _ = Contact.objects.get_or_create(email=email, defaults={"name": name})
        created = [spec["title"] for spec in TASKS if self.task(spec, users, contact)]
        played = self.play_reactions()
        if options["verbosity"] == 0:
            return
        if created:
            self.stdout.write(f"Seeded {len(created)} task(s) with comments and notifications.")
        else:
            self.stdout.write("Demo data already present.")
        for line in played:
            self.stdout.write(f"  {line}")

    def admin(self):
        User = get_user_model()
        username, password = ADMIN
        user = User.objects.filter(username=username).first()
        if user is None:
            user = User.objects.create_superuser(username, f"{username}@example.com", password)
        return user

    def staff(self, username, first_name, last_name):
        user, created = get_user_model().objects.get_or_create(
            username=username,
            defaults={
                "first_name": first_name,
                "last_name": last_name,
                "email": f"{username}@example.com",
                "is_staff": True,
            },
        )
        if created:
            user.set_password(STAFF_PASSWORD)
            user.save(update_fields=["password"])
        return user

    def task(self, spec, users, contact) -> bool:
        """Create the task of ``spec`` with its comments and notifications, unless it exists.

        Each at its time in the story; each notification is sent at once.
        """
        if Task.objects.filter(title=spec["title"]).exists():
            return False
        with story_clock(minutes_ago=spec["minutes_ago"]):
            with transaction.atomic():
                task = Task.objects.create(
                    title=spec["title"],
                    description=spec["description"],
                    created_by=users[spec["created_by"]],
                    assignee=users[spec["assignee"]],
                )
                task.watchers.set([users[name] for name in spec["watchers"]])
                if spec["contacts"]:
                    task.contacts.add(contact)
                notification = notifications.notify_task_created(task)
            send_emails(notification)
        for item in spec["comments"]:
            with story_clock(minutes_ago=item["minutes_ago"]):
                with transaction.atomic():
                    comment = Comment.objects.create(
                        task=task, author=users[item["author"]], body=item["body"]
                    )
                    notification = notifications.notify_comment(comment)
                send_emails(notification)
        return True

    # --- what the recipients did -----------------------------------------------------

    def play_reactions(self) -> list[str]:
        """Play each reaction of the story that its delivery does not show yet."""
        played = []
        for target, reaction in story_reactions():
            delivery = seeded_delivery(target, reaction.address)
            if delivery is None or delivery.sent_at is None or already_played(delivery, reaction):
                continue
            # Minutes after the send, as a person reads; never in the future.
            at = min(delivery.sent_at + reaction.after, timezone.now() - dt.timedelta(seconds=1))
            with clock_at(at):
                PLAY[reaction.action](delivery, at)
            if shows(delivery, reaction):
                what = f"{target._meta.verbose_name} #{target.pk}"
                played.append(f"{reaction.action} by {reaction.address} (about {what})")
            else:
                self.stderr.write(f"The {reaction.action} of {reaction.address} left no trace.")
        return played


def story_reactions() -> Iterator[tuple[Task | Comment, Reaction]]:
    """(target, reaction) for each reaction of the story whose target exists."""
    for spec in TASKS:
        task = Task.objects.filter(title=spec["title"]).order_by("pk").first()
        if task is None:
            continue
        for reaction in spec["reactions"]:
            yield task, reaction
        for item in spec["comments"]:
            comment = (
                Comment.objects.filter(
                    task=task, author__username=item["author"], body=item["body"]
                )
                .order_by("pk")
                .first()
            )
            if comment is not None:
                for reaction in item["reactions"]:
                    yield comment, reaction


def seeded_delivery(target: Task | Comment, address: str) -> Delivery | None:
    """The email delivery to ``address`` of the first notification about ``target``."""
    notification = (
        Notification.objects.filter(
            content_type=ContentType.objects.get_for_model(target), object_id=str(target.pk)
        )
        .order_by("pk")
        .first()
    )
    if notification is None:
        return None
    return notification.deliveries.filter(channel=EMAIL_CHANNEL, recipient=address).first()


SOURCES = {
    READ: EventSource.PIXEL,
    MACHINE_OPEN: EventSource.PIXEL,
    CLICK: EventSource.CLICK,
    BOUNCE: EventSource.DSN,
}


def already_played(delivery: Delivery, reaction: Reaction) -> bool:
    """Whether the delivery has an event of the reaction's source (played before)."""
    return delivery.events.filter(source=SOURCES[reaction.action]).exists()


def shows(delivery: Delivery, reaction: Reaction) -> bool:
    """Whether the delivery now has the event the reaction was meant to make."""
    events = delivery.events.filter(source=SOURCES[reaction.action])
    if reaction.action == READ:
        events = events.filter(kind=st.OPENED, is_machine=False)
    elif reaction.action == MACHINE_OPEN:
        events = events.filter(kind=st.OPENED, is_machine=True)
    elif reaction.action == CLICK:
        events = events.filter(kind=st.CLICKED, is_machine=False)
    else:
        events = events.filter(kind=st.BOUNCED)
    return events.exists()


def open_pixel(user_agent: str):
    def play(delivery: Delivery, at: dt.datetime) -> None:
        for url in tracking_urls(delivery, "img", "src", "/open/")[:1]:
            request(url, user_agent)
        # The request only kept the open; record it now (what the worker's task does).
        apply_pending_opens()

    return play


def click_first_link(delivery: Delivery, at: dt.datetime) -> None:
    for url in tracking_urls(delivery, "a", "href", "/click/")[:1]:
        request(url, BROWSER)


def bounce(delivery: Delivery, at: dt.datetime) -> None:
    ingest_bytes(delivery_status_notification(delivery, at), origin="seed_demo")


PLAY = {
    READ: open_pixel(MAIL_PROGRAM),
    MACHINE_OPEN: open_pixel(APPLE_MPP),
    CLICK: click_first_link,
    BOUNCE: bounce,
}


# --- the entry points: tracking URLs, a delivery report ----------------------------------


def send_emails(notification: Notification | None) -> None:
    """Send the notification's emails now (what the worker does); other channels wait for it.

    The webhook deliveries wait for the worker: their receiver starts with the demo.
    """
    if notification is None:
        return
    ids = notification.deliveries.filter(channel=EMAIL_CHANNEL, status=st.QUEUED)
    ids = list(ids.values_list("pk", flat=True))
    if ids:
        send_deliveries(ids)


def tracking_urls(delivery: Delivery, tag: str, attribute: str, marker: str) -> list[str]:
    """The tracking URLs in the HTML of the delivery's email, as the email channel made it."""
    html = tracked_content(delivery.notification, [delivery]).html
    found = re.findall(rf'<{tag}\b[^>]*?\b{attribute}="([^"]+)"', html)
    return [url for url in map(unescape, found) if marker in url]


def request(url: str, user_agent: str):
    """GET ``url`` of this site through Django's whole request path, as a mail program would."""
    site = base_url() or ""
    if not url.startswith(site + "/"):
        raise ValueError(f"not a URL of this site: {url}")
    client = Client(HTTP_HOST=urlsplit(site).netloc, HTTP_USER_AGENT=user_agent)
    return client.get(url[len(site) :])


def delivery_status_notification(delivery: Delivery, at: dt.datetime) -> bytes:
    """The bounce Dana's mail server sends back: an RFC 3464 report, "mailbox full"."""
    date = format_datetime(at)
    return f"""\
From: Mail Delivery System <MAILER-DAEMON@{DANA_MTA}>
To: <bounces@tracker.example.com>
Subject: Undelivered Mail Returned to Sender
Date: {date}
Message-ID: <dsn-{delivery.token}@{DANA_MTA}>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="dsn-boundary"

--dsn-boundary
Content-Type: text/plain; charset=utf-8

This is the mail system at host {DANA_MTA}. Your message could not be
delivered to {delivery.recipient}: the mailbox is full.

--dsn-boundary
Content-Type: message/delivery-status

Reporting-MTA: dns; {DANA_MTA}
Original-Envelope-Id: {delivery.token}
Arrival-Date: {date}

Final-Recipient: rfc822; {delivery.recipient}
Action: failed
Status: 5.2.2
Remote-MTA: dns; {DANA_MTA}
Diagnostic-Code: smtp; 552 5.2.2 Mailbox full: {delivery.recipient} is over its quota
Last-Attempt-Date: {date}

--dsn-boundary
Content-Type: text/rfc822-headers

Message-ID: {delivery.email_message_id}
Subject: {delivery.notification.subject}

--dsn-boundary--
""".encode()


# --- the story's clock -----------------------------------------------------------------


@contextlib.contextmanager
def clock_at(when: dt.datetime) -> Iterator[None]:
    """Make the clock the app reads start at ``when`` meanwhile (it keeps ticking)."""
    offset = when - timezone.now()
    real_now = timezone.now
    with mock.patch("django.utils.timezone.now", lambda: real_now() + offset):
        yield


def story_clock(*, minutes_ago: int):
    return clock_at(timezone.now() - dt.timedelta(minutes=minutes_ago))
