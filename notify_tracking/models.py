"""What was sent, to whom, and what became of it.

``Notification`` is one message about one target; ``Delivery`` is that message to one
recipient over one channel, a summary row kept up to date by
:func:`notify_tracking.service.record_event`; ``DeliveryEvent`` is the append-only log
that summary is computed from.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import DEFAULT_DB_ALIAS, models, router, transaction
from django.db.models import Q
from django.db.models.functions import Upper
from django.utils.translation import gettext_lazy as _

from . import status as st

STATUS_LABELS = {
    st.QUEUED: _("Queued"),
    st.SENT: _("Sent"),
    st.DELIVERED: _("Delivered"),
    st.OPENED: _("Read"),
    st.CLICKED: _("Clicked"),
    st.DEFERRED: _("Delayed"),
    st.FAILED: _("Failed"),
    st.REJECTED: _("Rejected"),
    st.BOUNCED: _("Bounced"),
    st.COMPLAINED: _("Marked as spam"),
}
STATUS_CHOICES = [(status, STATUS_LABELS[status]) for status in st.STATUSES]
EVENT_KIND_CHOICES = [
    *STATUS_CHOICES,
    (st.DOWNLOAD, _("Downloaded a file")),
    (st.UNSUBSCRIBED, _("Unsubscribed")),
]


class EventSource(models.TextChoices):
    CHANNEL = "channel", _("Send result")
    PIXEL = "pixel", _("Tracking pixel")
    CLICK = "click", _("Tracked link")
    DOWNLOAD = "download", _("Tracked download")
    ESP = "esp", _("Email provider")
    DSN = "dsn", _("Delivery report")
    MDN = "mdn", _("Read receipt")


class Notification(models.Model):
    """One message about one target (a task, a comment...), sent to one or more recipients."""

    # No index of its own: nt_notif_target (content_type, object_id) serves its look-ups,
    # and PostgreSQL, before any ANALYZE, chose the narrower one for a target's
    # notifications and filtered every row of the content type (tests/test_badge_plans.py).
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, db_index=False)
    # A string so that integer and UUID primary keys both fit; always str(target.pk).
    object_id = models.CharField(max_length=64)
    target = GenericForeignKey("content_type", "object_id")

    channel = models.CharField(_("channel"), max_length=32)
    subject = models.CharField(_("subject"), max_length=998, blank=True)
    text = models.TextField(_("text"))
    html = models.TextField(_("HTML"), blank=True)
    sender = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("sender"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True, db_index=True)

    track_opens = models.BooleanField(_("track opens"), default=True)
    track_clicks = models.BooleanField(_("track clicks"), default=True)
    request_delivery_report = models.BooleanField(_("delivery report requested"), default=False)
    request_read_receipt = models.BooleanField(_("read receipt requested"), default=False)

    class Meta:
        verbose_name = _("notification")
        verbose_name_plural = _("notifications")
        indexes = [models.Index(fields=["content_type", "object_id"], name="nt_notif_target")]

    def __str__(self) -> str:
        return self.subject or f"{self.channel} #{self.pk}"


def attachment_path(instance: Attachment, filename: str) -> str:
    return f"notify_tracking/{instance.notification_id}/{uuid.uuid4().hex}/{filename}"


class Attachment(models.Model):
    """A file sent with a notification."""

    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, related_name="attachments"
    )
    file = models.FileField(upload_to=attachment_path, max_length=500)
    filename = models.CharField(max_length=255)
    mimetype = models.CharField(max_length=255, blank=True)

    class Meta:
        verbose_name = _("attachment")
        verbose_name_plural = _("attachments")

    def __str__(self) -> str:
        return self.filename


#: Every anonymised recipient starts with this (see notify_tracking.retention); no
#: channel accepts it as an address.
ANONYMISED_PREFIX = "anonymised:"


class Delivery(models.Model):
    """A notification to one recipient over one channel, and what became of it.

    Only :func:`notify_tracking.service.record_event` changes ``status`` and the
    fields derived from events (timestamps, counts, ``error``).
    """

    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, related_name="deliveries"
    )
    recipient = models.CharField(_("recipient"), max_length=320)
    recipient_name = models.CharField(_("recipient name"), max_length=255, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    channel = models.CharField(_("channel"), max_length=32)
    status = models.CharField(_("status"), max_length=16, choices=STATUS_CHOICES, default=st.QUEUED)
    error = models.TextField(_("error"), blank=True)
    # Unguessable key of this delivery in tracking URLs and report envelopes.
    token = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)

    message_id = models.CharField(_("provider message id"), max_length=255, blank=True)
    email_message_id = models.CharField(_("Message-ID header"), max_length=255, blank=True)

    track_opens = models.BooleanField(_("opens tracked"), default=True)
    track_clicks = models.BooleanField(_("clicks tracked"), default=True)

    open_count = models.PositiveIntegerField(_("opens"), default=0)
    machine_open_count = models.PositiveIntegerField(_("automated opens"), default=0)
    click_count = models.PositiveIntegerField(_("clicks"), default=0)
    machine_click_count = models.PositiveIntegerField(_("automated clicks"), default=0)

    created_at = models.DateTimeField(_("queued"), auto_now_add=True)
    sent_at = models.DateTimeField(_("sent"), null=True, blank=True)
    delivered_at = models.DateTimeField(_("delivered"), null=True, blank=True)
    first_opened_at = models.DateTimeField(_("first read"), null=True, blank=True)
    last_opened_at = models.DateTimeField(_("last read"), null=True, blank=True)
    first_clicked_at = models.DateTimeField(_("first click"), null=True, blank=True)
    failed_at = models.DateTimeField(_("failed"), null=True, blank=True)
    # occurred_at of the latest event applied: an older event makes the summary refold.
    last_event_at = models.DateTimeField(null=True, blank=True, editable=False)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)
    # When the sender was told that this delivery was read (instantly or in a digest).
    read_notice_sent_at = models.DateTimeField(null=True, blank=True, editable=False)

    # Sending bookkeeping (not status): see notify_tracking.tasks.
    attempts = models.PositiveSmallIntegerField(_("send attempts"), default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, editable=False)
    claimed_until = models.DateTimeField(null=True, blank=True, editable=False)
    claim = models.UUIDField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("delivery")
        verbose_name_plural = _("deliveries")
        indexes = [
            # The search by address in any case: recipient__iexact and __istartswith
            # compare UPPER(recipient). On PostgreSQL migration 0004 builds it with the
            # text_pattern_ops operator class, so that it serves LIKE 'ABC%' under any
            # collation as well as equality (docs/activity-log.md).
            models.Index(Upper("recipient"), name="nt_deliv_recipient_upper"),
            models.Index(fields=["message_id"], name="nt_deliv_message_id"),
            models.Index(fields=["email_message_id"], name="nt_deliv_email_msgid"),
            models.Index(fields=["-created_at"], name="nt_deliv_created"),
            models.Index(
                fields=["next_attempt_at"],
                name="nt_deliv_sendable",
                condition=Q(status__in=st.SENDABLE),
            ),
            models.Index(fields=["claim"], name="nt_deliv_claim", condition=Q(claim__isnull=False)),
        ]

    def __str__(self) -> str:
        # The admin's titles and breadcrumbs show it: the status as people read it.
        return f"{self.recipient} ({self.channel}): {self.status_label}"

    @property
    def status_label(self) -> str:
        return str(STATUS_LABELS[self.status])


class DeliveryEvent(models.Model):
    """One piece of news about a delivery. Append-only."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(_("event"), max_length=16, choices=EVENT_KIND_CHOICES)
    occurred_at = models.DateTimeField(_("occurred"))
    recorded_at = models.DateTimeField(_("recorded"), auto_now_add=True)
    source = models.CharField(_("source"), max_length=16, choices=EventSource.choices)
    is_machine = models.BooleanField(_("automated"), default=False)
    provider_event_id = models.CharField(_("provider event id"), max_length=255, blank=True)
    user_agent = models.CharField(_("user agent"), max_length=512, blank=True)
    ip_address = models.GenericIPAddressField(_("IP address"), null=True, blank=True)
    details = models.JSONField(_("details"), default=dict, blank=True)

    class Meta:
        verbose_name = _("delivery event")
        verbose_name_plural = _("delivery events")
        ordering = ["occurred_at", "id"]
        indexes = [
            models.Index(fields=["delivery", "occurred_at"], name="nt_event_delivery"),
            models.Index(fields=["occurred_at"], name="nt_event_occurred"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["delivery", "provider_event_id"],
                condition=~Q(provider_event_id=""),
                name="nt_event_once_per_provider_id",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} via {self.source} at {self.occurred_at:%Y-%m-%d %H:%M:%S}"


class PendingOpen(models.Model):
    """A pixel load waiting to be applied: the pixel request only inserts this row.

    A task (``notify_tracking.apply_pending_opens``) classifies each one, records it
    as an ``opened`` event through ``record_events()`` and deletes it, within seconds
    (docs/tracking.md, "How an open is recorded"). The IP address is kept here only
    until then, and stored on the event only when ``STORE_IP_ADDRESSES`` is on.
    """

    token = models.UUIDField()
    group = models.BooleanField(default=False)
    occurred_at = models.DateTimeField()
    user_agent = models.CharField(max_length=512, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        verbose_name = _("pending open")
        verbose_name_plural = _("pending opens")

    def __str__(self) -> str:
        return f"open of {self.token} at {self.occurred_at:%Y-%m-%d %H:%M:%S}"


class SpoolCheckpoint(models.Model):
    """How much of one spool file of pixel loads is already in :class:`PendingOpen`.

    Only with ``OPEN_SPOOL_DIR`` (notify_tracking.tracking.spool): the offset moves in
    the same transaction as the rows it covers, so a line is moved exactly once, even
    when the process that moves it dies half-way. The row is deleted with its file.
    """

    name = models.CharField(max_length=100, unique=True)
    offset = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = _("spool checkpoint")
        verbose_name_plural = _("spool checkpoints")

    def __str__(self) -> str:
        return f"{self.name} at {self.offset}"


class ReadNotice(models.TextChoices):
    NEVER = "never", _("Never")
    INSTANT = "instant", _("At once")
    DIGEST = "digest", _("In a daily digest")


class TrackingPreference(models.Model):
    """A user's choices about the notifications they send and receive."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notify_tracking_pref"
    )
    request_delivery_reports = models.BooleanField(
        _("ask for a delivery report on everything I send"), default=False
    )
    request_read_receipts = models.BooleanField(
        _("ask for a read receipt on everything I send"), default=False
    )
    read_notice = models.CharField(
        _("tell me when a recipient reads"),
        max_length=16,
        choices=ReadNotice.choices,
        default=ReadNotice.NEVER,
    )
    allow_tracking = models.BooleanField(
        _("allow read and click tracking of messages sent to me"), default=True
    )

    class Meta:
        verbose_name = _("tracking preference")
        verbose_name_plural = _("tracking preferences")

    def __str__(self) -> str:
        return str(self.user)


def concrete_field(model: type[models.Model], name: str) -> models.Field:
    """``model``'s field ``name``, which must be a column of its table (for the app's
    few statements written in SQL: their names come from the models, quoted)."""
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field) and field.column  # a concrete column
    return field


def write_db() -> str:
    """The database alias the app's rows are written to. All its models live in one
    database (their foreign keys join them). Code that reads rows to decide what to
    write reads them here, and so does every read inside its transactions: a router
    may send reads to a replica that lags, or that cannot see a transaction not yet
    committed."""
    return router.db_for_write(Delivery)


def on_commit(callback: Callable[[], Any]) -> None:
    """Run ``callback`` once what the app wrote is committed (on :func:`write_db`) and,
    when the host's default database is another, once the host's transaction there
    commits too: ``notify()`` called inside the host's ``atomic()`` sends nothing if
    the host rolls back."""
    alias = write_db()
    if alias == DEFAULT_DB_ALIAS:
        transaction.on_commit(callback, using=alias)
    else:
        transaction.on_commit(lambda: transaction.on_commit(callback), using=alias)
