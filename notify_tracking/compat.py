"""What differs between the Django versions the app supports."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

V = TypeVar("V", bound=Callable)


def login_not_required(view: V) -> V:
    """Mark a view that people without an account must reach (a recipient's mail
    client loading the pixel, following a link, fetching a file or a PNG badge):
    Django's ``LoginRequiredMiddleware`` would send them to the login page."""
    try:  # Django 5.1+
        from django.contrib.auth.decorators import login_not_required as mark
    except ImportError:  # no LoginRequiredMiddleware before 5.1: nothing to mark
        return view
    return mark(view)
