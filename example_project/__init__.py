"""The demo: a small task tracker that notifies through notify_tracking.

Start it with ``make demo`` (or ``python example_project/run_demo.py``); see docs/demo.md.
The Celery app lives in :mod:`example_project.celery_app`, imported by the entry
points (``manage.py``, ``wsgi.py``, ``run_demo.py``) rather than here, so that
importing the demo's apps (as the test suite does) creates no Celery app.
"""
