"""The REST API's permission: signed-in users, then the ``PERMISSION`` setting per target."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import models
from rest_framework.permissions import BasePermission

from ..permissions import can_view


@dataclass(frozen=True)
class TargetStatus:
    """A target and its summary: the object the API's object permission is asked about."""

    target: models.Model
    summary: dict[str, Any]


class CanViewStatus(BasePermission):
    """Anonymous users get nothing; others see the targets ``PERMISSION`` allows them."""

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated)

    def has_object_permission(self, request, view, obj: TargetStatus) -> bool:
        return can_view(request.user, obj.target, obj.summary)
