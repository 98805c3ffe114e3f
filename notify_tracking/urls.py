"""Routes of the app. Mount with ``path("notify/", include("notify_tracking.urls"))``.

Names live in the ``notify_tracking`` namespace: ``open``, ``click``, ``download``
(tracking, :mod:`notify_tracking.tracking.urls`), ``status-badge`` and
``status-badge-png`` (:mod:`notify_tracking.views`), and ``api-status``,
``api-status-list`` (REST, :mod:`notify_tracking.api.urls`, when
djangorestframework is installed).
"""

from importlib.util import find_spec

from django.urls import path

from . import views
from .activity.urls import urlpatterns as activity_urlpatterns
from .tracking.urls import urlpatterns as tracking_urlpatterns

app_name = "notify_tracking"

urlpatterns = [
    *tracking_urlpatterns,
    # The badge HTML that the popup's refresh button loads; the PNG badge for emails.
    # <path:pk>: a text key may hold "/" ("PROJ/123"); the "/badge/" after it still ends it.
    path("status/<str:target_type>/<path:pk>/badge/", views.badge_fragment, name="status-badge"),
    path("badge/<str:token>.png", views.badge_png, name="status-badge-png"),
]

if find_spec("rest_framework") is not None:
    from .api.urls import urlpatterns as api_urlpatterns

    urlpatterns += api_urlpatterns

# The activity log, its CSV export, the preferences (docs/activity-log.md).
urlpatterns += activity_urlpatterns
