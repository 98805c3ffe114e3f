from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("notify/", include("notify_tracking.urls")),
    path("admin/", admin.site.urls),
    path("anymail/", include("anymail.urls")),
]
