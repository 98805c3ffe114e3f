"""Who may see a target's status, and who may see its recipients' addresses.

The ``PERMISSION`` setting names a callable ``(user, target, summary) -> bool``; the
badge tag, the badge fragment, the REST API and the admin inline all ask it. The
summary is passed so that a rule can use the senders without a query per target.

Addresses are shown to staff, to a sender of the target's notifications, and to a
recipient for their own delivery; everyone else sees the recipient's name and a
masked address (``a***@example.com``), also inside error messages.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from django.db import models
from django.utils.module_loading import import_string

from .conf import get_setting

Permission = Callable[[Any, models.Model, dict[str, Any]], bool]


def default_permission(user: Any, target: models.Model, summary: dict[str, Any]) -> bool:
    """Staff, a sender of the target's notifications, or a user allowed to view the target.

    "Allowed to view" is ``user.has_perm("<app_label>.view_<model>")`` (for every
    object of the model) or ``user.has_perm(..., target)`` (object-permission backends
    such as django-guardian or django-rules).
    """
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    if user.is_staff or user.pk in summary.get("sender_ids", ()):
        return True
    opts = target._meta
    perm = f"{opts.app_label}.view_{opts.model_name}"
    return user.has_perm(perm) or user.has_perm(perm, target)


@lru_cache(maxsize=8)
def _load(path: str) -> Permission:
    return import_string(path)


def get_permission() -> Permission:
    """The callable named by the ``PERMISSION`` setting."""
    value = get_setting("PERMISSION")
    return _load(value) if isinstance(value, str) else value


def can_view(user: Any, target: models.Model, summary: dict[str, Any]) -> bool:
    """Whether ``user`` may see the status of ``target``."""
    return bool(get_permission()(user, target, summary))


def sees_addresses(user: Any, summary: dict[str, Any]) -> bool:
    """Whether ``user`` sees every recipient's address (staff and senders do)."""
    if not getattr(user, "is_authenticated", False):
        return False
    return bool(user.is_staff or user.pk in summary.get("sender_ids", ()))


def mask_address(address: str) -> str:
    """``alice@example.com`` → ``a***@example.com``; ``123456789`` → ``12***``."""
    local, at, domain = address.partition("@")
    if at:
        return f"{local[:1]}***@{domain}"
    return f"{address[:2]}***"


def mask_in(text: str | None, address: str) -> str | None:
    """``text`` (an error message...) with ``address`` masked wherever it appears."""
    if not text or not address:
        return text
    return text.replace(address, mask_address(address))


def for_viewer(summary: dict[str, Any], user: Any) -> dict[str, Any]:
    """A copy of ``summary`` with the addresses ``user`` may not see masked.

    Each delivery gets ``address_masked``: whether its ``recipient`` was masked.
    """
    everything = sees_addresses(user, summary)
    user_pk = user.pk if getattr(user, "is_authenticated", False) else None
    shown = copy.copy(summary)
    shown["deliveries"] = [
        _as_seen(
            delivery, visible=everything or (user_pk is not None and delivery["user_id"] == user_pk)
        )
        for delivery in summary["deliveries"]
    ]
    return shown


def _as_seen(delivery: dict[str, Any], *, visible: bool) -> dict[str, Any]:
    if visible:
        return {**delivery, "address_masked": False}
    address = delivery["recipient"]
    return {
        **delivery,
        "recipient": mask_address(address),
        "error": mask_in(delivery["error"], address),
        "address_masked": True,
    }
