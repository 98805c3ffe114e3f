from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.shortcuts import render

from notify_tracking.tracking.views import pixel_response

from .models import Comment


@transaction.non_atomic_requests
def bare_pixel(request, token):
    """The baseline of the pixel benchmark: the same GIF and headers, nothing recorded."""
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
