"""Benchmarks of notify_tracking (not tests): ``make bench``, see docs/performance.md.

Each benchmark runs the app side by side with a baseline on the same machine, the
same services and the same worker settings, and reports the ratio of the two.
"""

# The usual Django pattern: the Celery app is loaded with the project, so that
# shared tasks (the app's, post_office's) are sent through it from any process.
from .celery_app import app as celery_app

__all__ = ["celery_app"]
