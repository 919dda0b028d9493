from django.urls import path

from jobs import views

app_name = "jobs"

urlpatterns = [
    path("", views.home, name="home"),
    path("activity/", views.activity, name="activity"),
    path("notifications/", views.create_notification, name="create_notification"),
    path("reports/", views.create_report, name="create_report"),
]
