from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class WebhookInboxConfig(AppConfig):
    name = "example_project.webhook_inbox"
    label = "webhook_inbox"
    verbose_name = _("Webhook inbox (demo)")
