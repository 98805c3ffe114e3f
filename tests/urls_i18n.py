"""The test URLconf with the app's URLs under i18n_patterns (tests/test_sub_path.py)."""

from django.conf.urls.i18n import i18n_patterns
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("anymail/", include("anymail.urls")),
    *i18n_patterns(path("notify/", include("notify_tracking.urls"))),
]
