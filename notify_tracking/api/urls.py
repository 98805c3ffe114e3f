"""REST routes, included by :mod:`notify_tracking.urls` when DRF is installed."""

from django.urls import path

from .views import StatusListView, StatusView

urlpatterns = [
    path("api/status/", StatusListView.as_view(), name="api-status-list"),
    # <path:pk>: a text key may hold "/" ("PROJ/123").
    path("api/status/<str:target_type>/<path:pk>/", StatusView.as_view(), name="api-status"),
]
