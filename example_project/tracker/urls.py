from django.urls import path

from . import views

app_name = "tracker"

urlpatterns = [
    path("", views.task_list, name="task-list"),
    path("tasks/new/", views.task_create, name="task-create"),
    path("tasks/<int:pk>/", views.task_detail, name="task-detail"),
    path("tasks/<int:pk>/comments/", views.add_comment, name="comment-add"),
    path("tasks/<int:pk>/assign/", views.assign, name="task-assign"),
]
