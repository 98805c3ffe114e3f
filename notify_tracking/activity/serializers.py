"""REST serializers: a row of the activity log, an event of its timeline, preferences."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from rest_framework import serializers

from ..models import Delivery, DeliveryEvent, TrackingPreference
from ..status import EVENT_KINDS, STATUSES


class DeliveryLogSerializer(serializers.ModelSerializer):
    """One delivery with its notification's subject, target and sender."""

    # The same field as the status API's, so that the OpenAPI schema has one status enum.
    status = serializers.ChoiceField(choices=STATUSES, read_only=True)
    status_label = serializers.CharField(read_only=True)
    subject = serializers.CharField(source="notification.subject", read_only=True)
    notification = serializers.IntegerField(source="notification_id", read_only=True)
    target = serializers.SerializerMethodField()
    sender = serializers.SerializerMethodField()
    events_url = serializers.SerializerMethodField()

    class Meta:
        model = Delivery
        fields = [
            "id",
            "notification",
            "subject",
            "target",
            "sender",
            "recipient",
            "recipient_name",
            "channel",
            "status",
            "status_label",
            "error",
            "created_at",
            "sent_at",
            "delivered_at",
            "first_opened_at",
            "last_opened_at",
            "first_clicked_at",
            "failed_at",
            "open_count",
            "machine_open_count",
            "click_count",
            "events_url",
        ]
        read_only_fields = fields

    def get_target(self, delivery: Delivery) -> str:
        """``<app_label>.<model>:<pk>``, as the ``target`` filter takes it."""
        notification = delivery.notification
        content_type = notification.content_type
        return f"{content_type.app_label}.{content_type.model}:{notification.object_id}"

    def get_sender(self, delivery: Delivery) -> str | None:
        sender = delivery.notification.sender
        return sender.get_username() if sender is not None else None

    def get_events_url(self, delivery: Delivery) -> str:
        path = reverse("notify_tracking:api-activity-events", kwargs={"pk": delivery.pk})
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path


class DeliveryEventSerializer(serializers.ModelSerializer):
    """One event of a delivery's timeline; ``reason`` is why it failed or was delayed."""

    kind = serializers.ChoiceField(choices=EVENT_KINDS, read_only=True)
    kind_label = serializers.CharField(source="get_kind_display", read_only=True)
    source_label = serializers.CharField(source="get_source_display", read_only=True)
    reason = serializers.SerializerMethodField()

    class Meta:
        model = DeliveryEvent
        fields = [
            "id",
            "kind",
            "kind_label",
            "occurred_at",
            "recorded_at",
            "source",
            "source_label",
            "is_machine",
            "reason",
            "user_agent",
            "ip_address",
            "details",
        ]
        read_only_fields = fields

    def get_reason(self, event: DeliveryEvent) -> str:
        details: Any = event.details
        return str(details.get("error", "")) if isinstance(details, dict) else ""


class TrackingPreferenceSerializer(serializers.ModelSerializer):
    """The current user's preferences (the user comes from the request)."""

    class Meta:
        model = TrackingPreference
        fields = [
            "request_delivery_reports",
            "request_read_receipts",
            "read_notice",
            "allow_tracking",
        ]
