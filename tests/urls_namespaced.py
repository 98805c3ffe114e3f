"""The test URLconf with the app included under an instance namespace of the project's
choosing (tests/test_sub_path.py)."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("notify/", include("notify_tracking.urls", namespace="notify")),
    path("admin/", admin.site.urls),
    path("anymail/", include("anymail.urls")),
]
