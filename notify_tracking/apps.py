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
