"""Delivery status notifications (RFC 3464) and read receipts (RFC 8098).

A report arrives as a ``multipart/report`` email, through the management command
``notify_tracking_ingest_report`` (an MTA pipe or a file) or anymail's ``inbound``
signal (:func:`handle_inbound`). :func:`ingest_bytes` parses it, finds the delivery it
is about, and records one event per recipient through
:func:`~notify_tracking.service.record_event`. See docs/reports.md.

Matching, first key that finds a delivery wins: the DSN's ``Original-Envelope-Id``
(the ENVID we sent: the delivery's token), the MDN's ``Original-Message-ID``, the
``Message-ID`` of the returned headers. Each recipient block then goes to the
matched delivery or, when one email went to every recipient, to the delivery of the
same notification whose address it names (see :func:`_delivery_for`).

A bad report never raises: it is ignored, logged, and said in the :class:`Outcome`.
Only database errors propagate, so that the caller (an MTA, a webhook) retries.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import quopri
import re
import uuid
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser, HeaderParser
from email.utils import parsedate_to_datetime
from typing import Any, BinaryIO, cast

from django.utils import timezone

from . import status as st
from .conf import get_setting
from .models import Delivery, DeliveryEvent, EventSource, write_db
from .service import record_event

logger = logging.getLogger(__name__)

#: RFC 3464 ``Action`` → event kind.
ACTION_KINDS = {
    "failed": st.BOUNCED,
    "delayed": st.DEFERRED,
    "delivered": st.DELIVERED,
    "relayed": st.DELIVERED,
    "expanded": st.DELIVERED,
}
#: RFC 8098 disposition type → event kind. Only ``displayed`` is a read; the others
#: prove that the message reached the recipient's mail program, no more.
DISPOSITION_KINDS = {
    "displayed": st.OPENED,
    "deleted": st.DELIVERED,
    "dispatched": st.DELIVERED,
    "processed": st.DELIVERED,
}
DSN_PARTS = ("message/delivery-status", "message/global-delivery-status")
MDN_PARTS = ("message/disposition-notification", "message/global-disposition-notification")
RETURNED_PARTS = ("text/rfc822-headers", "message/rfc822", "message/global-headers")
#: Recipient blocks read from one report; a longer report is cut (and says so).
MAX_RECIPIENTS = 100
#: Longest field value kept, in characters.
FIELD_MAX = 1000

#: RFC 3463 status codes: class, subject, and the details seen most in bounces.
_STATUS_CLASS = {"2": "success", "4": "temporary failure", "5": "permanent failure"}
_STATUS_SUBJECT = {
    "0": "other or undefined status",
    "1": "addressing status",
    "2": "mailbox status",
    "3": "mail system status",
    "4": "network and routing status",
    "5": "mail delivery protocol status",
    "6": "message content or media status",
    "7": "security or policy status",
}
_STATUS_DETAIL = {
    "1.1": "bad destination mailbox address",
    "1.2": "bad destination system address",
    "1.10": "the recipient's domain accepts no mail",
    "2.1": "mailbox disabled, not accepting messages",
    "2.2": "mailbox full",
    "2.3": "message length exceeds administrative limit",
    "3.4": "message too big for system",
    "4.1": "no answer from host",
    "4.2": "bad connection",
    "4.4": "unable to route",
    "4.7": "delivery time expired",
    "7.1": "delivery not authorized, message refused",
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BLANK_LINE = re.compile(r"\r?\n[ \t]*\r?\n")
_ENCODED = ("base64", "quoted-printable")
#: A DSN field group with one of these is about a recipient, not the whole message.
_RECIPIENT_FIELDS = ("Action", "Final-Recipient", "Original-Recipient")


class ReportIgnored(Exception):
    """A message that is not a usable report; the message says why."""


@dataclass(frozen=True)
class RecipientReport:
    """What one report says about one recipient."""

    recipient: str
    addresses: tuple[str, ...]
    kind: str
    occurred_at: dt.datetime
    is_machine: bool = False
    error: str = ""
    user_agent: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Report:
    """A parsed report: its source (``dsn`` or ``mdn``), keys, and recipient blocks."""

    source: str
    report_id: str
    envelope_id: str
    message_ids: tuple[tuple[str, str], ...]
    recipients: tuple[RecipientReport, ...]
    skipped: tuple[str, ...] = ()


@dataclass
class Outcome:
    """What ingesting one message did, in lines a person can read."""

    recorded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``recorded``, ``unchanged`` (all known already) or ``ignored``."""
        if self.recorded:
            return "recorded"
        return "unchanged" if self.unchanged else "ignored"

    def ignore(self, reason: str, origin: str) -> Outcome:
        logger.warning("notify_tracking: ignored a report from %s: %s", origin, reason)
        self.ignored.append(reason)
        return self

    def lines(self) -> list[str]:
        return [
            *(f"recorded: {line}" for line in self.recorded),
            *(f"unchanged: {line}" for line in self.unchanged),
            *(f"ignored: {line}" for line in self.ignored),
        ]


# --- arrival ---------------------------------------------------------------------------


def ingest_bytes(raw: bytes, *, origin: str = "a report") -> Outcome:
    """Parse one raw message and record what it reports. Never raises for bad input."""
    outcome = Outcome()
    try:
        report = parse_report(read_message(raw))
    except ReportIgnored as why:
        return outcome.ignore(str(why), origin)
    except Exception as error:  # the email package on hostile input: stop here
        reason = f"{type(error).__name__}: {error}"[:200]
        return outcome.ignore(f"unreadable message ({reason})", origin)
    return record_report(report, outcome, origin=origin)


def read_limited(stream: BinaryIO) -> bytes:
    """At most ``MAX_REPORT_BYTES + 1`` bytes of ``stream``, the rest read and dropped.

    Reading to the end lets an MTA that pipes a message see it taken; the extra byte
    lets :func:`read_message` tell that the message was too large.
    """
    limit = get_setting("MAX_REPORT_BYTES")
    data = stream.read(limit + 1)
    while stream.read(65536):
        pass
    return data


def handle_inbound(sender: Any, event: Any, esp_name: str = "", **kwargs: Any) -> None:
    """Receiver of anymail's ``inbound`` signal: ingest the message if it is a report."""
    message = getattr(event, "message", None)
    if not isinstance(message, Message) or message.get_content_type() != "multipart/report":
        logger.debug("notify_tracking: inbound message from %s is not a report", esp_name)
        return
    origin = f"anymail inbound ({esp_name or 'unknown ESP'})"
    try:
        raw = message.as_bytes()
    except Exception as error:  # a message anymail built but cannot serialize
        Outcome().ignore(f"cannot serialize the message ({type(error).__name__})", origin)
        return
    ingest_bytes(raw, origin=origin)


# --- parsing ---------------------------------------------------------------------------


def read_message(raw: bytes) -> EmailMessage:
    """The message in ``raw``, parsed; :class:`ReportIgnored` when empty or too large."""
    limit = get_setting("MAX_REPORT_BYTES")
    if len(raw) > limit:
        raise ReportIgnored(f"the message is larger than MAX_REPORT_BYTES ({limit} bytes)")
    if not raw.strip():
        raise ReportIgnored("the message is empty")
    return BytesParser(policy=policy.default).parsebytes(raw)


def parse_report(message: Message) -> Report:
    """The report in ``message``; :class:`ReportIgnored` when it is not a usable one."""
    content_type = message.get_content_type()
    if content_type != "multipart/report":
        raise ReportIgnored(f"not a report (content type {content_type})")
    parts = list(cast(EmailMessage, message).iter_parts())  # parsed with policy.default
    for part in parts:
        if part.get_content_type() in DSN_PARTS:
            return _parse_dsn(message, part)
        if part.get_content_type() in MDN_PARTS:
            return _parse_mdn(message, part)
    raise ReportIgnored("a multipart/report without a delivery-status or disposition part")


def _parse_dsn(message: Message, part: Message) -> Report:
    blocks = _field_blocks(part)
    per_recipient = [b for b in blocks if any(_field(b, name) for name in _RECIPIENT_FIELDS)]
    per_message = next((b for b in blocks if all(b is not r for r in per_recipient)), Message())
    shared = {
        "reporting_mta": _field(per_message, "Reporting-MTA"),
        "arrival_date": _iso(_date(_field(per_message, "Arrival-Date"))),
    }
    default_time = _report_time(message)
    items, skipped = [], _cut(per_recipient)
    for block in per_recipient[:MAX_RECIPIENTS]:
        try:
            items.append(_dsn_recipient(block, shared, default_time))
        except ReportIgnored as why:
            skipped.append(str(why))
    return _report(EventSource.DSN.value, message, part, items, skipped, per_message)


def _dsn_recipient(block: Message, shared: dict, default_time: dt.datetime) -> RecipientReport:
    recipient, addresses = _recipient(block)
    action_field = _field(block, "Action")
    action = _first_word(action_field)
    if action not in ACTION_KINDS:
        what = f"unknown Action {action_field!r}" if action_field else "no Action"
        raise ReportIgnored(f"{what} for {recipient}")
    kind = ACTION_KINDS[action]
    status, diagnostic = _status_code(_field(block, "Status")), _field(block, "Diagnostic-Code")
    remote_mta = _field(block, "Remote-MTA")
    attempt = _date(_field(block, "Last-Attempt-Date"))
    failed = kind in (st.BOUNCED, st.DEFERRED)
    return RecipientReport(
        recipient=recipient,
        addresses=addresses,
        kind=kind,
        occurred_at=_not_after_now(attempt) or default_time,
        error=readable_error(status, diagnostic, remote_mta) if failed else "",
        details={
            **shared,
            "action": action,
            "status": status,
            "diagnostic_code": diagnostic,
            "remote_mta": remote_mta,
            "final_recipient": _field(block, "Final-Recipient"),
            "original_recipient": _field(block, "Original-Recipient"),
            "last_attempt_date": _iso(attempt),
        },
    )


def _parse_mdn(message: Message, part: Message) -> Report:
    blocks = _field_blocks(part)
    fields = blocks[0] if blocks else Message()
    try:
        items = [_mdn_recipient(fields, _report_time(message))]
    except ReportIgnored as why:
        items, skipped = [], [str(why)]
    else:
        skipped = []
    return _report(EventSource.MDN.value, message, part, items, skipped, fields)


def _mdn_recipient(fields: Message, occurred_at: dt.datetime) -> RecipientReport:
    recipient, addresses = _recipient(fields)
    disposition = _field(fields, "Disposition")
    if not disposition:
        raise ReportIgnored(f"no Disposition for {recipient}")
    action_mode, sending_mode, kind_word, modifiers = parse_disposition(disposition)
    if kind_word not in DISPOSITION_KINDS:
        raise ReportIgnored(f"unknown disposition {disposition!r} for {recipient}")
    kind = DISPOSITION_KINDS[kind_word]
    error = _field(fields, "Error")
    if "error" in modifiers and kind == st.OPENED:
        kind = st.DELIVERED  # the reader's program failed to process it: not a read
    return RecipientReport(
        recipient=recipient,
        addresses=addresses,
        kind=kind,
        occurred_at=occurred_at,
        # Only a read can be a machine's; is_machine on other kinds would hold them back.
        is_machine=kind == st.OPENED and action_mode == "automatic-action",
        user_agent=_field(fields, "Reporting-UA"),
        details={
            "disposition": kind_word,
            "action_mode": action_mode,
            "sending_mode": sending_mode,
            "modifiers": modifiers,
            "mdn_error": error,
            "final_recipient": _field(fields, "Final-Recipient"),
            "original_recipient": _field(fields, "Original-Recipient"),
        },
    )


def _report(
    source: str,
    message: Message,
    part: Message,
    items: list[RecipientReport],
    skipped: list[str],
    fields: Message,
) -> Report:
    if not items:
        why = "; ".join(skipped) or "it names no recipient"
        raise ReportIgnored(f"nothing usable in the {source.upper()} ({why})")
    message_ids = [("Original-Message-ID", _message_id(_field(fields, "Original-Message-ID")))]
    message_ids += [("returned Message-ID", mid) for mid in _returned_message_ids(message)]
    return Report(
        source=source,
        report_id=_message_id(_field(message, "Message-ID")) or _fingerprint(part),
        envelope_id=xtext_decode(_field(fields, "Original-Envelope-Id")),
        message_ids=tuple((key, mid) for key, mid in message_ids if mid),
        recipients=tuple(items),
        skipped=tuple(skipped),
    )


def parse_disposition(value: str) -> tuple[str, str, str, list[str]]:
    """``(action mode, sending mode, disposition type, modifiers)`` of a Disposition field.

    ``"manual-action/MDN-sent-manually; displayed"`` →
    ``("manual-action", "mdn-sent-manually", "displayed", [])``. Lower case.
    """
    value = re.sub(r"\([^)]*\)", "", value).lower()
    mode, _, kind = value.partition(";")
    action_mode, _, sending_mode = mode.strip().partition("/")
    kind_word, *modifiers = [word.strip() for word in kind.split("/")]
    return action_mode.strip(), sending_mode.strip(), kind_word, [m for m in modifiers if m]


def readable_error(status: str, diagnostic: str, remote_mta: str) -> str:
    """Why a message failed or is late, from a report's Diagnostic-Code and Status."""
    text = diagnostic.partition(";")[2].strip() if ";" in diagnostic else diagnostic
    if status:
        described = describe_status(status)
        text = f"{text} ({described})" if text else described
    if not text:
        text = "the recipient's mail system gave no reason"
    if remote_mta:
        text += f"; reported by {remote_mta.partition(';')[2].strip() or remote_mta}"
    return text


def describe_status(code: str) -> str:
    """``"5.1.1"`` → ``"5.1.1 permanent failure: bad destination mailbox address"``."""
    klass, _, rest = code.partition(".")
    subject = rest.partition(".")[0]
    meaning = _STATUS_DETAIL.get(rest) or _STATUS_SUBJECT.get(subject, "unknown status")
    return f"{code} {_STATUS_CLASS.get(klass, 'unknown class')}: {meaning}"


def xtext_decode(value: str) -> str:
    """``value`` with RFC 3461 ``+XX`` escapes decoded."""
    return re.sub(r"\+([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), value)


# --- fields ----------------------------------------------------------------------------


def _field_blocks(part: Message) -> list[Message]:
    """The groups of fields of a report part, however the email package parsed it."""
    payload = part.get_payload()
    if not isinstance(payload, list) or _transfer_encoding(part) in _ENCODED:
        return _blocks_from_text(_part_text(part))
    blocks: list[Message] = []
    for block in payload:
        if isinstance(block, Message):
            blocks.append(block)
            body = block.get_payload()
            # message/* types other than delivery-status parse as one nested message
            # whose body holds the later groups of fields.
            if isinstance(body, str) and body.strip():
                blocks.extend(_blocks_from_text(body))
    return blocks


def _blocks_from_text(text: str) -> list[Message]:
    parser = HeaderParser(policy=policy.default)
    chunks = (chunk.strip("\r\n") for chunk in _BLANK_LINE.split(text))
    return [parser.parsestr(chunk + "\n") for chunk in chunks if chunk.strip()]


def _part_text(part: Message) -> str:
    """The decoded text of a part, also of a message/* part the parser took apart."""
    payload = part.get_payload()
    if not isinstance(payload, list):
        data = part.get_payload(decode=True)
        return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(payload or "")
    text = "".join(item.as_string() for item in payload if isinstance(item, Message))
    encoding = _transfer_encoding(part)
    if encoding == "base64":
        return base64.b64decode(re.sub(r"[^A-Za-z0-9+/=]", "", text)).decode("utf-8", "replace")
    if encoding == "quoted-printable":
        return quopri.decodestring(text.encode("utf-8", "replace")).decode("utf-8", "replace")
    return text


def _transfer_encoding(part: Message) -> str:
    return _field(part, "Content-Transfer-Encoding").lower()


def _field(fields: Message, name: str) -> str:
    """A field's value on one line, without control characters; "" when absent or bad."""
    try:
        value = fields.get(name)
    except Exception:  # the email package's header parser on malformed input
        return ""
    if value is None:
        return ""
    return _CONTROL.sub("", " ".join(str(value).split()))[:FIELD_MAX]


def _recipient(fields: Message) -> tuple[str, tuple[str, ...]]:
    final = _address(_field(fields, "Final-Recipient"))
    original = _address(_field(fields, "Original-Recipient"))
    if not (final or original):
        raise ReportIgnored("a recipient block without Final-Recipient")
    addresses = tuple(dict.fromkeys(a.lower() for a in (final, original) if a))
    return final or original, addresses


def _address(value: str) -> str:
    """The address of an ``rfc822; bob@example.com`` field."""
    address = value.partition(";")[2] if ";" in value else value
    return address.strip().strip("<>").strip()[:320]


def _message_id(value: str) -> str:
    found = re.search(r"<[^<>\s]+>", value)
    if found:
        return found.group(0)[:255]
    value = value.strip()
    return f"<{value}>"[:255] if value and " " not in value else ""


def _returned_message_ids(message: Message) -> list[str]:
    ids = []
    for part in cast(EmailMessage, message).iter_parts():
        if part.get_content_type() in RETURNED_PARTS:
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                headers = payload[0]
            else:
                headers = HeaderParser(policy=policy.default).parsestr(_part_text(part))
            ids.append(_message_id(_field(headers, "Message-ID")))
    return [mid for mid in ids if mid]


def _first_word(value: str) -> str:
    found = re.match(r"\s*([A-Za-z-]+)", value)
    return found.group(1).lower() if found else ""


def _status_code(value: str) -> str:
    found = re.search(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b", value)
    return found.group(0) if found else ""


def _date(value: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return parsed if timezone.is_aware(parsed) else parsed.replace(tzinfo=dt.timezone.utc)


def _not_after_now(when: dt.datetime | None) -> dt.datetime | None:
    return None if when is None else min(when, timezone.now())


def _report_time(message: Message) -> dt.datetime:
    return _not_after_now(_date(_field(message, "Date"))) or timezone.now()


def _iso(when: dt.datetime | None) -> str:
    return when.isoformat() if when else ""


def _cut(blocks: list[Message]) -> list[str]:
    extra = len(blocks) - MAX_RECIPIENTS
    return [f"{extra} recipient blocks beyond the first {MAX_RECIPIENTS}"] if extra > 0 else []


def _fingerprint(part: Message) -> str:
    text = "\n".join(
        f"{name}:{_field(block, name)}" for block in _field_blocks(part) for name in block
    )
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


# --- matching and recording --------------------------------------------------------------


def record_report(report: Report, outcome: Outcome, *, origin: str) -> Outcome:
    """Record each recipient block of ``report`` on the delivery it is about."""
    for reason in report.skipped:
        outcome.ignore(reason, origin)
    found = find_delivery(report)
    if found is None:
        return outcome.ignore("no delivery matches it: not a message this app sent", origin)
    anchor, matched_by = found
    for item in report.recipients:
        delivery = _delivery_for(item, anchor)
        if delivery is None:
            outcome.ignore(f"{item.recipient} was not sent the message it reports on", origin)
        else:
            _record_one(report, item, delivery, matched_by, outcome)
    return outcome


def find_delivery(report: Report) -> tuple[Delivery, str] | None:
    """The delivery a report is about, and the key that found it."""
    token = _uuid(report.envelope_id)
    if token is not None:
        delivery = Delivery.objects.using(write_db()).filter(token=token).first()
        if delivery is not None:
            return delivery, "envelope id"
    for key, message_id in report.message_ids:
        delivery = Delivery.objects.using(write_db()).filter(email_message_id=message_id).first()
        if delivery is not None:
            return delivery, key
    return None


def _delivery_for(item: RecipientReport, anchor: Delivery) -> Delivery | None:
    """The delivery a recipient block is about, or None when it cannot be about any.

    A block naming another recipient of the notification is theirs only when one
    email went to all of them (``ONE_EMAIL_PER_NOTIFICATION``); otherwise that
    recipient never got this message, and the block is forged or confused. An
    address the notification does not know is a forward or an alias of the matched
    delivery's recipient.
    """
    if anchor.recipient.lower() in item.addresses:
        return anchor
    siblings = Delivery.objects.using(write_db()).filter(
        notification_id=anchor.notification_id, channel=anchor.channel
    )
    for address in item.addresses:
        sibling = siblings.filter(recipient__iexact=address).first()
        if sibling is not None:
            return sibling if get_setting("ONE_EMAIL_PER_NOTIFICATION") else None
    return anchor


def _record_one(
    report: Report, item: RecipientReport, delivery: Delivery, matched_by: str, outcome: Outcome
) -> None:
    event_id = event_id_of(report, item)
    details = {**item.details, "matched_by": matched_by, "report_id": report.report_id}
    occurred_at = item.occurred_at
    if delivery.sent_at and occurred_at < delivery.sent_at:
        # A report cannot predate the send: the reporter's clock is off. Keep its
        # word in the details, and the order of events right.
        details["reported_at"] = occurred_at.isoformat()
        occurred_at = delivery.sent_at
    what = f"{item.kind} for {delivery.recipient} (delivery {delivery.pk}, matched by {matched_by})"
    try:
        event = record_event(
            delivery,
            item.kind,
            source=report.source,
            occurred_at=occurred_at,
            is_machine=item.is_machine,
            provider_event_id=event_id,
            user_agent=item.user_agent,
            error=item.error,
            details=details,
        )
    except Delivery.DoesNotExist:  # purged by retention since it was matched
        outcome.unchanged.append(f"{what}: not stored, the delivery no longer exists")
        return
    if event is not None:
        outcome.recorded.append(what)
    elif (
        DeliveryEvent.objects.using(write_db())
        .filter(delivery=delivery, provider_event_id=event_id)
        .exists()
    ):
        outcome.unchanged.append(f"{what}: this report was recorded before")
    else:
        outcome.unchanged.append(f"{what}: not stored, read tracking is off for this delivery")


def event_id_of(report: Report, item: RecipientReport) -> str:
    """The dedup key of one recipient block: the same report ingested twice is stored once."""
    key = f"{report.report_id}\n{item.recipient.lower()}".encode("utf-8", "replace")
    return f"{report.source}:{hashlib.sha256(key).hexdigest()[:40]}"


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value.strip()) if value else None
    except ValueError:
        return None
