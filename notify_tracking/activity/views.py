"""Plain Django views: the CSV export of the activity log, and the preferences form."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.cache import patch_cache_control
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_safe

from ..models import TrackingPreference
from .export import stream_csv
from .filters import FilterError, search
from .forms import TrackingPreferenceForm
from .permissions import can_view_activity


@require_safe
def export_csv(request: HttpRequest) -> HttpResponseBase:
    """The deliveries the query string's filters select, as a CSV download.

    Same parameters as the activity log API; a bad one answers 400 with a JSON object
    naming it. Streams, so an export of any size uses the same memory.
    """
    if not can_view_activity(request.user):
        raise PermissionDenied(_("You may not read the activity log."))
    try:
        deliveries = search(request.GET)
    except FilterError as error:
        return JsonResponse(error.errors, status=400)
    response = StreamingHttpResponse(stream_csv(deliveries), content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="deliveries-{stamp}.csv"'
    patch_cache_control(response, private=True, no_store=True)
    return response


def current_preference(user) -> TrackingPreference:
    """The user's saved preferences, or the defaults (unsaved: reading writes nothing)."""
    return TrackingPreference.objects.filter(user=user).first() or TrackingPreference(user=user)


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def preferences(request: HttpRequest) -> HttpResponse:
    """The current user's tracking preferences, as a form."""
    instance = current_preference(request.user)
    data = request.POST if request.method == "POST" else None
    form = TrackingPreferenceForm(data, instance=instance)
    if request.method == "POST" and form.is_valid():
        form.save()
        # fail_silently: a host without django.contrib.messages still gets its redirect.
        messages.success(
            request, _("Your notification preferences were saved."), fail_silently=True
        )
        return redirect(request.path)
    response = render(request, "notify_tracking/preferences/form.html", {"form": form})
    patch_cache_control(response, private=True, no_cache=True)
    return response
