"""Routes of the tracking endpoints (included by :mod:`notify_tracking.urls`)."""

from django.urls import path

from . import views

urlpatterns = [
    path("open/<str:token>.gif", views.open_pixel, name="open"),
    path("click/<str:token>/", views.click, name="click"),
    path("download/<str:token>/", views.download, name="download"),
]
