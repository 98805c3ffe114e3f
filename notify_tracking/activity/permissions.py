"""Who may read the activity log and its CSV export.

The ``ACTIVITY_LOG_PERMISSION`` setting names a callable ``(user) -> bool``; the
default lets active staff users in. The log shows every recipient's address, so open
it with care (e.g. to a "support" group: see docs/activity-log.md).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from django.utils.module_loading import import_string

from ..conf import get_setting

ActivityPermission = Callable[[Any], bool]


def staff_only(user: Any) -> bool:
    """The default: signed-in, active staff users."""
    return bool(getattr(user, "is_authenticated", False) and user.is_active and user.is_staff)


@lru_cache(maxsize=8)
def _load(path: str) -> ActivityPermission:
    return import_string(path)


def can_view_activity(user: Any) -> bool:
    """Whether ``user`` may read the activity log (the ``ACTIVITY_LOG_PERMISSION`` rule)."""
    if not getattr(user, "is_authenticated", False):
        return False
    rule = get_setting("ACTIVITY_LOG_PERMISSION")
    check = _load(rule) if isinstance(rule, str) else rule
    return bool(check(user))
