"""Read-only status endpoints: one target (``api-status``) and many (``api-status-list``).

A target the user may not see answers 404 like one that does not exist; in a list it
is left out. Responses are ``Cache-Control: private``: they depend on the user.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils.cache import patch_cache_control
from django.utils.translation import gettext as _
from rest_framework.exceptions import NotFound, ParseError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..aggregate import summaries, timelines
from ..conf import get_setting
from ..permissions import for_viewer, mask_in
from ..targets import BadTarget, fetch, key_of, model_of, parse_key, parse_pk
from .permissions import CanViewStatus, TargetStatus
from .serializers import StatusDetailSerializer, StatusListSerializer

try:
    from drf_spectacular.utils import OpenApiParameter, extend_schema
except ImportError:  # drf-spectacular is optional: the views work without it
    extend_schema = None  # type: ignore[assignment]


def documented(**kwargs: Any):
    """drf-spectacular's ``extend_schema`` when it is installed, else nothing."""
    if extend_schema is None:
        return lambda view: view
    return extend_schema(**kwargs)


class StatusAPIView(APIView):
    """Shared behaviour: the permission, 404 for hidden targets, private caching."""

    permission_classes = [CanViewStatus]

    def permission_denied(self, request: Request, message=None, code=None):
        if request.user and request.user.is_authenticated:
            # Refused at object level: answer as if the target did not exist.
            raise NotFound()
        super().permission_denied(request, message=message, code=code)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        patch_cache_control(response, private=True, no_cache=True)
        return response

    def visible(self, request: Request, targets: list[models.Model]) -> list[TargetStatus]:
        """The targets the user may see, each with its summary (same few queries for all)."""
        found = summaries(targets)
        statuses = [TargetStatus(target, found[target]) for target in targets]
        permission = CanViewStatus()
        return [s for s in statuses if permission.has_object_permission(request, self, s)]

    def present(self, request: Request, status: TargetStatus) -> dict[str, Any]:
        return {"target": key_of(status.target), **for_viewer(status.summary, request.user)}


class StatusView(StatusAPIView):
    """GET the status of one target, with each recipient's event timeline."""

    @documented(responses=StatusDetailSerializer, operation_id="notify_tracking_status")
    def get(self, request: Request, target_type: str, pk: str) -> Response:
        try:
            found = fetch([parse_pk(model_of(target_type), pk)])
        except BadTarget:
            raise NotFound() from None
        if not found:
            raise NotFound()
        status = TargetStatus(found[0], summaries(found)[found[0]])
        self.check_object_permissions(request, status)
        data = self.present(request, status)
        events, data["events_truncated"] = timelines(status.summary)
        addresses = {row["id"]: row["recipient"] for row in status.summary["deliveries"]}
        data["deliveries"] = [
            {
                **delivery,
                "events": _events_as_seen(
                    events.get(delivery["id"], []),
                    addresses[delivery["id"]],
                    masked=delivery["address_masked"],
                ),
            }
            for delivery in data["deliveries"]
        ]
        return Response(StatusDetailSerializer(data).data)


class StatusListView(StatusAPIView):
    """GET the statuses of many targets: ``?targets=app.model:pk,app.model:pk``."""

    @documented(
        responses=StatusListSerializer,
        operation_id="notify_tracking_status_list",
        parameters=[
            OpenApiParameter(
                "targets",
                str,
                required=True,
                description="Comma-separated <app_label>.<model>:<pk>; targets that do not "
                "exist or that you may not see are left out.",
            )
        ]
        if extend_schema is not None
        else None,
    )
    def get(self, request: Request) -> Response:
        wanted = self.wanted(request.query_params.get("targets", ""))
        statuses = self.visible(request, fetch(wanted))
        results = [self.present(request, status) for status in statuses]
        return Response(StatusListSerializer({"results": results}).data)

    def wanted(self, param: str) -> list[tuple[type[models.Model], Any]]:
        keys = list(dict.fromkeys(key.strip() for key in param.split(",") if key.strip()))
        if not keys:
            raise ParseError(_("Name the targets: ?targets=<app_label>.<model>:<pk>,..."))
        limit = get_setting("API_MAX_TARGETS")
        if len(keys) > limit:
            raise ParseError(_("Too many targets: at most %(limit)d.") % {"limit": limit})
        try:
            return [parse_key(key) for key in keys]
        except BadTarget as error:
            raise ParseError(str(error)) from None


def _events_as_seen(events: list[dict], address: str, *, masked: bool) -> list[dict]:
    """The events of a delivery, with its address masked in errors when it is masked."""
    if not masked:
        return events
    return [{**event, "error": mask_in(event["error"], address)} for event in events]
