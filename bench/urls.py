from django.urls import include, path

from bench.benchapp import views

urlpatterns = [
    path("notify/", include("notify_tracking.urls")),
    path("anymail/", include("anymail.urls")),
    path("bare/<str:token>.gif", views.bare_pixel, name="bare-pixel"),
    path("naive/<str:token>.gif", views.naive_pixel, name="naive-pixel"),
    path("comments/", views.comments, name="comments"),
]
