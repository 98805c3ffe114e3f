from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.db.models import F
from django.shortcuts import render
from django.utils import timezone

from notify_tracking.models import Delivery
from notify_tracking.tracking.tokens import InvalidToken, read_open
from notify_tracking.tracking.views import pixel_response

from .models import Comment


@transaction.non_atomic_requests
def bare_pixel(request, token):
    """The baseline of the pixel benchmark: the same GIF and headers, nothing recorded."""
    return pixel_response()


@transaction.non_atomic_requests
def naive_pixel(request, token):
    """The issue's reference point, "a naive view that does one durable UPDATE per
    request": the same token check and answer as the pixel, then one autocommitted
    ``UPDATE`` of the delivery's open count and last open time. It keeps no event, no
    user agent and no classification, so it is a baseline of the bench, not a way to
    record opens."""
    try:
        parsed = read_open(token)
    except InvalidToken:
        return pixel_response()
    Delivery.objects.filter(token=parsed.delivery).update(
        open_count=F("open_count") + 1, last_opened_at=timezone.now()
    )
    return pixel_response()


@login_required
def comments(request):
    """200 comments, with their status badges when ``?badges=1``."""
    rows = Comment.objects.select_related("author")[:200]
    return render(
        request,
        "benchapp/comments.html",
        {"comments": rows, "with_badges": request.GET.get("badges") == "1"},
    )
