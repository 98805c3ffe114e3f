"""REST routes, included by :mod:`notify_tracking.urls` when DRF is installed."""

from django.urls import path

from .views import StatusListView, StatusView

urlpatterns = [
    path("api/status/", StatusListView.as_view(), name="api-status-list"),
    path("api/status/<str:target_type>/<str:pk>/", StatusView.as_view(), name="api-status"),
]
