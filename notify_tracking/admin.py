"""Django admin: notifications with their deliveries, deliveries with their event timeline.

Built for big tables: no full result count, a paginator that stops counting at
``CappedCountPaginator.limit`` rows, filters whose choices come from settings rather
than a ``SELECT DISTINCT``, prefix-only search (no ``LIKE '%...'`` scans), and every
column read from the page's one query (``list_select_related``).

Everything is read-only: only :func:`notify_tracking.service.record_event` changes a
delivery. Rows may be deleted (e.g. to honour an erasure request).

Host projects can show an object's notifications on its own admin page with
:class:`NotificationInline`.
"""

from __future__ import annotations

from typing import Any, cast

from django.contrib import admin
from django.contrib.contenttypes.admin import GenericTabularInline
from django.core.paginator import Paginator
from django.db.models import Count, Q, QuerySet
from django.urls import NoReverseMatch, get_resolver, get_urlconf, reverse
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from . import status as st
from .activity.filters import address_matches
from .aggregate import describe
from .conf import channel_names
from .models import Delivery, DeliveryEvent, Notification

#: The most events the timeline of a delivery's admin page shows (the newest).
TIMELINE_LIMIT = 200


class CappedCountPaginator(Paginator):
    """A paginator that counts at most ``limit`` rows instead of the whole table.

    ``SELECT COUNT(*) FROM (SELECT ... LIMIT limit + 1)`` stops early; past the limit
    the count reads ``limit`` and :attr:`truncated` is True (the page shows "10000+").
    Filters, the date links and search reach the older rows.
    """

    limit = 10_000

    @cached_property
    def count(self) -> int:
        counted = cast(QuerySet, self.object_list)[: self.limit + 1].count()
        self.truncated = counted > self.limit
        return min(counted, self.limit)

    truncated = False


class ChannelFilter(admin.SimpleListFilter):
    """Channels from the settings: no ``SELECT DISTINCT channel`` over the whole table."""

    title = _("channel")
    parameter_name = "channel"

    def lookups(self, request, model_admin) -> list[tuple[str, str]]:
        return [(name, name) for name in channel_names()]

    def queryset(self, request, queryset: QuerySet) -> QuerySet:
        return queryset.filter(channel=self.value()) if self.value() else queryset


class ReadOnlyAdmin(admin.ModelAdmin):
    """Viewing and deleting only: statuses are written by record_event() alone."""

    show_full_result_count = False
    paginator = CappedCountPaginator
    list_per_page = 50

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyInlineMixin:
    extra = 0
    max_num: int | None = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


def _prefix_search(queryset: QuerySet, term: str, fields: tuple[str, ...]) -> QuerySet:
    """Rows whose ``fields`` start with ``term`` in any case (``UPPER(field) LIKE 'TERM%'``:
    for the recipient, the range the index on ``UPPER(recipient)`` answers)."""
    condition = Q()
    for field in fields:
        condition |= Q(**{f"{field}__istartswith": term})
    return queryset.filter(condition)


# --- deliveries -----------------------------------------------------------------------


class DeliveryInline(ReadOnlyInlineMixin, admin.TabularInline):
    model = Delivery
    fields = ("recipient", "recipient_name", "channel", "status", "error", "sent_at")
    readonly_fields = fields
    show_change_link = True


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = (
        "recipient",
        "channel",
        "status",
        "subject",
        "created_at",
        "sent_at",
        "first_opened_at",
        "open_count",
        "machine_open_count",
        "short_error",
    )
    list_filter = ("status", ChannelFilter, ("created_at", admin.DateFieldListFilter))
    list_select_related = ("notification",)
    search_fields = ("recipient", "notification__subject")
    search_help_text = _(
        "A recipient address (whole, or its beginning) or the beginning of a subject."
    )
    ordering = ("-created_at",)
    fieldsets = (
        (None, {"fields": ("notification_link", "recipient", "recipient_name", "user")}),
        (_("Status"), {"fields": ("channel", "status", "error")}),
        (
            _("When"),
            {
                "fields": (
                    "created_at",
                    "sent_at",
                    "delivered_at",
                    "first_opened_at",
                    "last_opened_at",
                    "first_clicked_at",
                    "failed_at",
                )
            },
        ),
        (
            _("Reads and clicks"),
            {
                "fields": (
                    "track_opens",
                    "track_clicks",
                    "open_count",
                    "machine_open_count",
                    "click_count",
                    "machine_click_count",
                )
            },
        ),
        (_("Provider"), {"fields": ("message_id", "email_message_id", "attempts")}),
        (_("Event timeline"), {"fields": ("timeline",)}),
    )
    readonly_fields = [str(field) for _title, options in fieldsets for field in options["fields"]]

    # Adds an "Activity log" link to the page of notify_tracking.activity.admin_views.
    change_list_template = "notify_tracking/activity/delivery_change_list.html"

    def get_urls(self):
        """The activity log page (:mod:`notify_tracking.activity.admin_views`) first."""
        from .activity.admin_views import activity_urls

        return activity_urls(self) + super().get_urls()

    def get_search_results(self, request, queryset: QuerySet, search_term: str):
        """An address is matched whole, in any case (the index on UPPER(recipient)), and
        so are its placeholders (anonymised deliveries); anything else as the beginning
        of an address or a subject. Never ``LIKE '%term%'``, which reads the whole
        table."""
        term = search_term.strip()
        if not term:
            return queryset, False
        if "@" in term and "." in term.rpartition("@")[2]:
            return queryset.filter(address_matches(term)), False
        return _prefix_search(queryset, term, ("recipient", "notification__subject")), False

    @admin.display(description=_("subject"), ordering="notification__subject")
    def subject(self, delivery: Delivery) -> str:
        return delivery.notification.subject

    @admin.display(description=_("error"))
    def short_error(self, delivery: Delivery) -> str:
        return delivery.error if len(delivery.error) <= 80 else delivery.error[:79] + "…"

    @admin.display(description=_("notification"))
    def notification_link(self, delivery: Delivery) -> str:
        url = _admin_url(
            self.admin_site, "notify_tracking_notification_change", delivery.notification_id
        )
        if url is None:
            return str(delivery.notification)
        return format_html('<a href="{}">{}</a>', url, delivery.notification)

    @admin.display(description=_("events, oldest first"))
    def timeline(self, delivery: Delivery) -> str:
        newest = list(delivery.events.order_by("-occurred_at", "-id")[: TIMELINE_LIMIT + 1])
        if not newest:
            return str(_("No events yet."))
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (_timeline_row(event) for event in reversed(newest[:TIMELINE_LIMIT])),
        )
        note = ""
        if len(newest) > TIMELINE_LIMIT:
            note = format_html(
                "<p>{}</p>",
                _("Only the newest %(limit)d events are shown.") % {"limit": TIMELINE_LIMIT},
            )
        return format_html(
            '{}<table class="nt-timeline"><thead><tr><th>{}</th><th>{}</th><th>{}</th>'
            "<th>{}</th><th>{}</th></tr></thead><tbody>{}</tbody></table>",
            note,
            _("When"),
            _("Event"),
            _("Source"),
            _("Possibly automatic"),
            _("Details"),
            rows,
        )


def _timeline_row(event: DeliveryEvent) -> tuple[Any, ...]:
    details = event.details or {}
    shown = "; ".join(
        f"{key}: {details[key]}" for key in ("url", "filename", "error") if details.get(key)
    )
    return (
        event.occurred_at,
        event.get_kind_display(),
        event.get_source_display(),
        _("yes") if event.is_machine else "",
        shown,
    )


# --- notifications --------------------------------------------------------------------


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "channel", "target_type", "object_id", "sender", "created_at")
    list_filter = (ChannelFilter, ("created_at", admin.DateFieldListFilter))
    list_select_related = ("content_type", "sender")
    search_fields = ("subject",)
    search_help_text = _("The beginning of a subject.")
    ordering = ("-created_at",)
    inlines = [DeliveryInline]
    fields = ("subject", "channel", "target_type", "object_id", "sender", "created_at", "text")
    readonly_fields = fields

    def get_search_results(self, request, queryset: QuerySet, search_term: str):
        term = search_term.strip()
        if not term:
            return queryset, False
        return _prefix_search(queryset, term, ("subject",)), False

    @admin.display(description=_("target type"), ordering="content_type")
    def target_type(self, notification: Notification) -> str:
        return notification.content_type.name


def _admin_url(site: admin.AdminSite, name: str, *args: Any) -> str | None:
    """The URL of admin page ``name`` on ``site`` (a host's own admin site), else on
    ``admin.site`` (the app's pages may be registered there only), never on a third
    site; None when neither has it. Only the sites mounted in the URLconf are tried:
    "admin", the app namespace too, would otherwise stand for whichever site Django
    finds."""
    mounted = get_resolver(get_urlconf()).app_dict.get("admin", [])
    for namespace in dict.fromkeys((site.name, admin.site.name)):
        if namespace not in mounted:
            continue
        try:
            return reverse(f"{namespace}:{name}", args=args)
        except NoReverseMatch:
            continue
    return None


# --- for host projects ----------------------------------------------------------------

_STATUS_COUNTS = {
    f"n_{status}": Count("deliveries", filter=Q(deliveries__status=status))
    for status in st.STATUSES
}


class NotificationInline(ReadOnlyInlineMixin, GenericTabularInline):
    """The notifications of an object, for a host project's own admin pages::

        from notify_tracking.admin import NotificationInline

        @admin.register(Task)
        class TaskAdmin(admin.ModelAdmin):
            inlines = [NotificationInline]

    Each row shows its status label ("Read by 2 of 3"); all rows come from one query.
    """

    model = Notification
    ct_field = "content_type"
    ct_fk_field = "object_id"
    fields = ("subject", "channel", "sender", "created_at", "status")
    readonly_fields = fields
    ordering = ("-created_at",)
    show_change_link = True

    def get_queryset(self, request) -> QuerySet:
        return super().get_queryset(request).select_related("sender").annotate(**_STATUS_COUNTS)

    @admin.display(description=_("status"))
    def status(self, notification: Notification) -> str:
        counts = {status: getattr(notification, f"n_{status}", 0) for status in st.STATUSES}
        label = describe(counts)["label"]
        url = _admin_url(self.admin_site, "notify_tracking_delivery_changelist")
        if url is None:
            return label
        return format_html('<a href="{}?notification={}">{}</a>', url, notification.pk, label)
