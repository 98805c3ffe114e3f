from django.urls import path

from . import views

app_name = "webhook_inbox"

urlpatterns = [
    path("", views.inbox, name="inbox"),
]
