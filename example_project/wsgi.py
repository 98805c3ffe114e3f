"""WSGI entry point of the demo (``runserver`` uses it too)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

from example_project.celery_app import app as celery_app  # noqa: F401  (tasks use it)

application = get_wsgi_application()
