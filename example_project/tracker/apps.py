from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TrackerConfig(AppConfig):
    name = "example_project.tracker"
    label = "tracker"
    verbose_name = _("Task tracker (demo)")
    default_auto_field = "django.db.models.BigAutoField"
