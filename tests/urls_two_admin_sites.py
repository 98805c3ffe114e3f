"""A host with two admin sites of its own and no ``admin.site`` (tests/test_admin.py):
its staff's site shows the app's inline, another site has the app's pages."""

from django.contrib import admin
from django.urls import include, path

from notify_tracking.admin import DeliveryAdmin, NotificationAdmin, NotificationInline
from notify_tracking.models import Delivery, Notification
from tests.testapp.models import Task


class TaskAdmin(admin.ModelAdmin):
    inlines = [NotificationInline]


staff_site = admin.AdminSite(name="staff_admin")
staff_site.register(Task, TaskAdmin)
super_site = admin.AdminSite(name="super_admin")
super_site.register(Delivery, DeliveryAdmin)
super_site.register(Notification, NotificationAdmin)
urlpatterns = [
    path("notify/", include("notify_tracking.urls")),
    path("staff/", staff_site.urls),
    path("super/", super_site.urls),
]
