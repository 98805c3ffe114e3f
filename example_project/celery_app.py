"""The demo's Celery app. Start a worker with ``celery -A example_project.celery_app worker``."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

app = Celery("example_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["notify_tracking"])


@app.on_after_finalize.connect
def add_periodic_tasks(sender: Celery, **kwargs) -> None:
    # Here, not in settings: notify_tracking.tasks imports models, which settings can't.
    from notify_tracking.tasks import beat_schedule

    sender.conf.beat_schedule = {**beat_schedule(), **(sender.conf.beat_schedule or {})}
