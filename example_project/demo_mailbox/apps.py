from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class DemoMailboxConfig(AppConfig):
    name = "example_project.demo_mailbox"
    label = "demo_mailbox"
    verbose_name = _("Demo mailbox")
    default_auto_field = "django.db.models.BigAutoField"
