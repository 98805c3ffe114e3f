"""Events of one delivery as each entry point receives them, for the reliability tests.

Builders of a sent delivery with two tracked links, of an anymail tracking event, of a
delivery status notification and of a read receipt, at a given time.
"""

from __future__ import annotations

import datetime as dt
from email.utils import format_datetime

from anymail.signals import AnymailTrackingEvent

from notify_tracking import notify, record_event
from notify_tracking.models import Delivery

READER = "reader@example.net"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
APPLE_PROXY = "Mozilla/5.0"
LINKS = ("https://tracker.example.com/tasks/1", "https://tracker.example.com/tasks/2")
HTML = (
    f'<html><body><p><a href="{LINKS[0]}">Task 1</a> and <a href="{LINKS[1]}">Task 2</a>'
    "</p></body></html>"
)
ESP_TYPES = (
    "queued", "delivered", "deferred", "bounced", "rejected", "failed", "opened", "clicked",
    "complained", "unsubscribed", "autoresponded",
)  # fmt: skip
DSN_ACTIONS = {
    "delivered": ("2.0.0", "250 2.0.0 Ok: queued"),
    "relayed": ("2.0.0", "250 relayed"),
    "delayed": ("4.4.1", "421 4.4.1 Connection timed out"),
    "failed": ("5.1.1", "550 5.1.1 User unknown"),
}
MDN_DISPOSITIONS = (
    "manual-action/MDN-sent-manually; displayed",
    "automatic-action/MDN-sent-automatically; displayed",
    "manual-action/MDN-sent-manually; deleted",
    "automatic-action/MDN-sent-automatically; processed",
)


def sent_delivery(task, sent_at: dt.datetime) -> Delivery:
    delivery = notify(
        task, [READER], subject="Build failed", text="It failed.", html=HTML
    ).deliveries.get()
    record_event(delivery, "sent", source="channel", occurred_at=sent_at, message_id="pm-1")
    delivery.refresh_from_db()
    return delivery


def dsn(delivery: Delivery, action: str, at: dt.datetime, number: int) -> bytes:
    status, diagnostic = DSN_ACTIONS[action]
    when = format_datetime(at)
    return f"""Date: {when}
From: Mail Delivery System <MAILER-DAEMON@mx.tracker.example.com>
To: tracker@example.com
Subject: Delivery report
Message-Id: <dsn-{delivery.pk}-{number}@mx.tracker.example.com>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain; charset=us-ascii

A report.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.tracker.example.com
Original-Envelope-Id: {delivery.token}

Final-Recipient: rfc822; {delivery.recipient}
Action: {action}
Status: {status}
Remote-MTA: dns; mx.example.net
Diagnostic-Code: smtp; {diagnostic}
Last-Attempt-Date: {when}

--B--
""".encode()


def mdn(delivery: Delivery, disposition: str, at: dt.datetime, number: int) -> bytes:
    return f"""Date: {format_datetime(at)}
From: Reader <{delivery.recipient}>
To: tracker@example.com
Subject: Read: Build failed
Message-ID: <mdn-{delivery.pk}-{number}@mail.example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=disposition-notification; boundary="M"

--M
Content-Type: text/plain; charset=UTF-8

Your message was displayed.

--M
Content-Type: message/disposition-notification

Reporting-UA: mail.example.net; Thunderbird 128.5.0
Final-Recipient: rfc822;{delivery.recipient}
Original-Message-ID: {delivery.email_message_id}
Disposition: {disposition}

--M--
""".encode()


def esp_event(delivery: Delivery, event_type: str, at: dt.datetime, number: int):
    reader = event_type in ("opened", "clicked")
    return AnymailTrackingEvent(
        event_type=event_type,
        timestamp=at,
        event_id=f"pm-{delivery.pk}-{number}",
        message_id=delivery.message_id,
        recipient=delivery.recipient,
        metadata={"notify_tracking_delivery": str(delivery.token)},
        user_agent=BROWSER if reader else None,
        click_url=LINKS[0] if event_type == "clicked" else None,
        description=f"{event_type} #{number}" if event_type in ("deferred", "bounced") else None,
        esp_event={},
    )
