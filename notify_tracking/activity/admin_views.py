"""The activity log as a page of the Django admin, next to the Delivery changelist.

``DeliveryAdmin.get_urls()`` adds :func:`activity_urls`; the page is at
``admin/notify_tracking/delivery/activity/`` (URL name
``admin:notify_tracking_delivery_activity``). It takes the same search parameters as
the API and the CSV export, shows the newest ``PAGE_SIZE`` matches with a link to
older ones, links each row to the delivery's admin page (its event timeline) and
offers the CSV export of the same search.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.translation import gettext as _

from ..models import Delivery
from .filters import FilterError, search
from .forms import ActivitySearchForm
from .permissions import can_view_activity

PAGE_SIZE = 100


def activity_urls(model_admin: admin.ModelAdmin) -> list[URLPattern]:
    """The page's route, to put before ``super().get_urls()`` in DeliveryAdmin."""

    def view(request: HttpRequest) -> TemplateResponse:
        return activity_page(request, model_admin)

    return [
        path(
            "activity/",
            model_admin.admin_site.admin_view(view),
            name="notify_tracking_delivery_activity",
        )
    ]


def activity_page(request: HttpRequest, model_admin: admin.ModelAdmin) -> TemplateResponse:
    """Search form, matching deliveries newest first, link to older ones and to the CSV."""
    if not (model_admin.has_view_permission(request) and can_view_activity(request.user)):
        raise PermissionDenied
    errors: dict[str, str] = {}
    rows: list[Delivery] = []
    try:
        rows = _rows(request)
    except FilterError as error:
        errors = error.errors
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": Delivery._meta,
        "title": _("Activity log"),
        "form": ActivitySearchForm(request.GET or None),
        "errors": errors,
        "rows": rows[:PAGE_SIZE],
        "older_url": _older_url(request, rows[PAGE_SIZE - 1]) if len(rows) > PAGE_SIZE else "",
        "export_url": _export_url(request),
    }
    return TemplateResponse(
        request, "notify_tracking/activity/admin_log.html", context, status=400 if errors else 200
    )


def _rows(request: HttpRequest) -> list[Delivery]:
    """One page of matches and the first row of the next; FilterError names every bad input."""
    errors: dict[str, str] = {}
    try:
        deliveries = search(request.GET, extra=["before"])
    except FilterError as error:
        errors.update(error.errors)
    try:
        older = _before(request)
    except FilterError as error:
        errors.update(error.errors)
    if errors:
        raise FilterError(errors)
    return list(deliveries.filter(older)[: PAGE_SIZE + 1])


def _before(request: HttpRequest) -> Q:
    """Rows after the delivery named by ``?before=<id>`` in newest-first order."""
    before = request.GET.get("before", "")
    if not before:
        return Q()
    if not (before.isascii() and before.isdecimal() and len(before) <= 18):
        raise FilterError({"before": _("must be a delivery id")})
    created = Delivery.objects.filter(pk=int(before)).values_list("created_at", flat=True).first()
    if created is None:
        raise FilterError({"before": _("no such delivery")})
    return Q(created_at__lt=created) | Q(created_at=created, pk__lt=int(before))


def _search_params(request: HttpRequest) -> list[tuple[str, str]]:
    return [(key, str(value)) for key, value in request.GET.items() if key != "before" and value]


def _older_url(request: HttpRequest, last: Delivery) -> str:
    return "?" + urlencode([*_search_params(request), ("before", str(last.pk))])


def _export_url(request: HttpRequest) -> str:
    query = urlencode(_search_params(request))
    return reverse("notify_tracking:activity-export") + (f"?{query}" if query else "")
