from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class NotifyTrackingConfig(AppConfig):
    name = "notify_tracking"
    verbose_name = _("Notification tracking")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from anymail.signals import inbound

        from . import checks  # noqa: F401  (registers the system checks)
        from .reports import handle_inbound

        inbound.connect(handle_inbound, dispatch_uid="notify_tracking.reports.handle_inbound")
        self._connect_esp()

    def _connect_esp(self) -> None:
        """ESP tracking webhooks (docs/esp-webhooks.md)."""
        from anymail.signals import tracking
        from django.core.signals import request_finished, request_started

        from . import esp
        from .esp import buffer

        tracking.connect(esp.on_tracking, dispatch_uid="notify_tracking.esp.on_tracking")
        request_started.connect(buffer.open_buffer, dispatch_uid="notify_tracking.esp.open_buffer")
        request_finished.connect(
            buffer.close_buffer, dispatch_uid="notify_tracking.esp.close_buffer"
        )
