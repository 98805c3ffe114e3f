"""REST views: the activity log, a delivery's event timeline, the user's preferences.

The log and the timeline are for support staff (``ACTIVITY_LOG_PERMISSION``); the
preferences endpoint is each signed-in user's own. Bad search input answers 400 with
the bad parameters named, like every DRF validation error.
"""

from __future__ import annotations

import re
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils.cache import patch_cache_control
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.generics import ListAPIView, RetrieveAPIView, RetrieveUpdateAPIView
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from ..api.views import documented
from ..conf import get_setting
from ..models import Delivery, TrackingPreference, write_db
from .filters import PARAMETERS, FilterError, base_queryset, search
from .permissions import can_view_activity
from .serializers import (
    DeliveryEventSerializer,
    DeliveryLogSerializer,
    TrackingPreferenceSerializer,
)
from .views import current_preference

#: The largest id a delivery can have (a signed 64-bit integer).
MAX_ID = 2**63 - 1
#: The most events one timeline answer holds (the first ones, in time order).
TIMELINE_LIMIT = 1000
#: Query parameters the list view handles besides the filters.
PAGING_PARAMETERS = ("cursor", "page_size", "format")
ASCII_NUMBER = re.compile(r"[0-9]{1,9}")

try:
    from drf_spectacular.utils import OpenApiParameter

    FILTER_PARAMETERS: list[Any] = [
        OpenApiParameter(name, str, description=f"see docs/activity-log.md: {name}")
        for name in PARAMETERS
    ] + [OpenApiParameter("page_size", int)]
except ImportError:  # drf-spectacular is optional
    FILTER_PARAMETERS = []


class CanReadActivityLog(BasePermission):
    """The ``ACTIVITY_LOG_PERMISSION`` rule (active staff by default)."""

    message = gettext_lazy("You may not read the activity log.")

    def has_permission(self, request: Request, view: Any) -> bool:
        return can_view_activity(request.user)


class ActivityPagination(CursorPagination):
    """Newest first, by cursor; a page size above ``ACTIVITY_MAX_PAGE_SIZE`` is a 400."""

    ordering = ("-created_at", "-pk")
    page_size_query_param = "page_size"

    def get_page_size(self, request: Request) -> int:
        maximum = get_setting("ACTIVITY_MAX_PAGE_SIZE")
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return min(get_setting("ACTIVITY_PAGE_SIZE"), maximum)
        if not (ASCII_NUMBER.fullmatch(raw) and 1 <= int(raw) <= maximum):
            raise ValidationError(
                {"page_size": [_("must be a whole number from 1 to %(max)d") % {"max": maximum}]}
            )
        return int(raw)

    def decode_cursor(self, request: Request) -> Any:
        try:
            cursor = super().decode_cursor(request)
        except NotFound:
            cursor = False
        if cursor is False or (
            cursor is not None and cursor.position and not _is_moment(cursor.position)
        ):
            raise ValidationError({"cursor": [_("is not a cursor of this list; start over")]})
        return cursor


def _is_moment(value: str) -> bool:
    try:
        return parse_datetime(value) is not None
    except ValueError:
        return False


class PrivateMixin:
    """Answers depend on the user: never cached by a shared cache."""

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        patch_cache_control(response, private=True, no_cache=True)
        return response


@documented(parameters=FILTER_PARAMETERS)
class ActivityLogView(PrivateMixin, ListAPIView):
    """Deliveries matching the filters, newest first, a cursor page at a time."""

    serializer_class = DeliveryLogSerializer
    permission_classes = [CanReadActivityLog]
    pagination_class = ActivityPagination

    def get_queryset(self) -> QuerySet[Delivery]:
        try:
            return search(self.request.query_params, extra=PAGING_PARAMETERS)
        except FilterError as error:
            raise ValidationError(
                {name: [reason] for name, reason in error.errors.items()}
            ) from None


class DeliveryTimelineView(PrivateMixin, RetrieveAPIView):
    """One delivery and its events, oldest first."""

    serializer_class = DeliveryLogSerializer
    permission_classes = [CanReadActivityLog]

    def get_queryset(self) -> QuerySet[Delivery]:
        return base_queryset()

    def get_object(self) -> Delivery:
        # No row has an id past 64 bits; Django < 5.0 would fail on one (OverflowError on
        # SQLite, DataError on PostgreSQL) instead of finding nothing.
        if self.kwargs["pk"] > MAX_ID:
            raise NotFound
        return super().get_object()

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        delivery = self.get_object()
        events = list(delivery.events.order_by("occurred_at", "pk")[: TIMELINE_LIMIT + 1])
        return Response(
            {
                "delivery": self.get_serializer(delivery).data,
                "events": DeliveryEventSerializer(events[:TIMELINE_LIMIT], many=True).data,
                "truncated": len(events) > TIMELINE_LIMIT,
            }
        )


class PreferenceView(PrivateMixin, RetrieveUpdateAPIView):
    """GET, PUT or PATCH the signed-in user's tracking preferences."""

    serializer_class = TrackingPreferenceSerializer
    permission_classes = [IsAuthenticated]

    def get_object(self) -> TrackingPreference:
        return current_preference(self.request.user)

    def perform_update(self, serializer: TrackingPreferenceSerializer) -> None:
        """Save; a row created meanwhile by a concurrent first save is updated instead."""
        alias = write_db()
        try:
            with transaction.atomic(using=alias):
                serializer.save()
        except IntegrityError:
            serializer.instance = TrackingPreference.objects.using(alias).get(
                user=self.request.user
            )
            serializer.save()
