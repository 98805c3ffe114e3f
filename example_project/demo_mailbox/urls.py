from django.urls import path

from . import views

app_name = "demo_mailbox"

urlpatterns = [
    path("", views.message_list, name="message-list"),
    path("<int:pk>/", views.message_detail, name="message-detail"),
]
