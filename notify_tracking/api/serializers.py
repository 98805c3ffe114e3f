"""Read-only serializers of status summaries (see :mod:`notify_tracking.aggregate`)."""

from __future__ import annotations

from rest_framework import serializers

from ..aggregate import STATES
from ..status import EVENT_KINDS, STATUSES


class EventSerializer(serializers.Serializer):
    """One entry of a delivery's timeline."""

    kind = serializers.ChoiceField(choices=EVENT_KINDS)
    kind_label = serializers.CharField()
    occurred_at = serializers.DateTimeField()
    source = serializers.CharField()
    source_label = serializers.CharField()
    is_machine = serializers.BooleanField(help_text="A possibly automatic open or click.")
    url = serializers.CharField(allow_null=True, help_text="The link of a click.")
    filename = serializers.CharField(allow_null=True, help_text="The file of a download.")
    error = serializers.CharField(allow_null=True, help_text="Why it failed or is delayed.")


class DeliverySerializer(serializers.Serializer):
    """What became of the notification for one recipient over one channel."""

    id = serializers.IntegerField()
    recipient = serializers.CharField(help_text="The address; masked unless you may see it.")
    address_masked = serializers.BooleanField()
    recipient_name = serializers.CharField(allow_blank=True)
    channel = serializers.CharField()
    status = serializers.ChoiceField(choices=STATUSES)
    status_label = serializers.CharField()
    stage = serializers.CharField(
        help_text="The badge state it stands for: queued, sent, delivered, read or error."
    )
    error = serializers.CharField(allow_blank=True)
    queued_at = serializers.DateTimeField()
    sent_at = serializers.DateTimeField(allow_null=True)
    delivered_at = serializers.DateTimeField(allow_null=True)
    first_opened_at = serializers.DateTimeField(allow_null=True)
    last_opened_at = serializers.DateTimeField(allow_null=True)
    first_clicked_at = serializers.DateTimeField(allow_null=True)
    failed_at = serializers.DateTimeField(allow_null=True)
    open_count = serializers.IntegerField()
    machine_open_count = serializers.IntegerField(help_text="Possibly automatic opens.")
    click_count = serializers.IntegerField()
    machine_click_count = serializers.IntegerField(help_text="Possibly automatic clicks.")
    links = serializers.ListField(child=serializers.CharField(), help_text="Links clicked.")
    files = serializers.ListField(child=serializers.CharField(), help_text="Files downloaded.")
    reports_delivery = serializers.BooleanField(help_text="Whether the channel reports delivery.")
    reports_reads = serializers.BooleanField(help_text="Whether the channel reports reads.")
    tracks_opens = serializers.BooleanField(help_text="Whether reads of this one are tracked.")
    settled = serializers.BooleanField(help_text="Whether the status can no longer change.")


class DeliveryWithEventsSerializer(DeliverySerializer):
    events = EventSerializer(many=True)


class NotificationSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    subject = serializers.CharField(allow_blank=True)
    channel = serializers.CharField()
    created_at = serializers.DateTimeField()


class StatusSerializer(serializers.Serializer):
    """The status of one target (its latest notification)."""

    target = serializers.CharField(help_text="<app_label>.<model>:<pk>")
    state = serializers.ChoiceField(choices=STATES, allow_null=True)
    label = serializers.CharField()
    complete = serializers.BooleanField()
    settled = serializers.BooleanField()
    errors = serializers.IntegerField()
    total = serializers.IntegerField()
    counts = serializers.DictField(child=serializers.IntegerField())
    reached = serializers.DictField(child=serializers.IntegerField())
    notification = NotificationSerializer(allow_null=True)
    notification_count = serializers.IntegerField()
    deliveries = DeliverySerializer(many=True)


class StatusDetailSerializer(StatusSerializer):
    """The status of one target with each delivery's event timeline."""

    deliveries = DeliveryWithEventsSerializer(many=True)
    events_truncated = serializers.BooleanField(
        help_text="Whether older events were left out of the timelines."
    )


class StatusListSerializer(serializers.Serializer):
    results = StatusSerializer(many=True)
