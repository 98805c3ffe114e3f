"""The Celery app of the benchmarks: the app's tasks, post_office's, and the no-op."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

app = Celery("bench")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["notify_tracking", "post_office", "bench.benchapp"])
