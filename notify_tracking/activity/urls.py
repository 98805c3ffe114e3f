"""Routes of the activity log, its CSV export and the preferences (in the app's urls).

Names in the ``notify_tracking`` namespace: ``activity-export`` and ``preferences``,
and with djangorestframework installed ``api-activity``, ``api-activity-events`` and
``api-preferences``.
"""

from importlib.util import find_spec

from django.urls import path

from . import views

urlpatterns = [
    path("activity/deliveries.csv", views.export_csv, name="activity-export"),
    path("preferences/", views.preferences, name="preferences"),
]

if find_spec("rest_framework") is not None:
    from .api_views import ActivityLogView, DeliveryTimelineView, PreferenceView

    urlpatterns += [
        path("api/activity/deliveries/", ActivityLogView.as_view(), name="api-activity"),
        path(
            "api/activity/deliveries/<int:pk>/events/",
            DeliveryTimelineView.as_view(),
            name="api-activity-events",
        ),
        path("api/preferences/", PreferenceView.as_view(), name="api-preferences"),
    ]
