from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("example_project.tracker.urls")),
    path("mailbox/", include("example_project.demo_mailbox.urls")),
    path("webhook-inbox/", include("example_project.webhook_inbox.urls")),
    path("accounts/", include("django.contrib.auth.urls")),
    path("notify/", include("notify_tracking.urls")),
    # Email providers post their tracking webhooks here (see docs/esp-webhooks.md).
    path("anymail/", include("anymail.urls")),
    path("admin/", admin.site.urls),
]
