from django.urls import path

from example import views

app_name = "example"

# The example pages: each guarded by `views.example_page` (the EXAMPLE_PAGES switch, a
# login, the example's permissions).
urlpatterns = [
    path("", views.home, name="home"),
    path("activity/", views.activity, name="activity"),
    path("notifications/", views.create_notification, name="create_notification"),
    path("reports/", views.create_report, name="create_report"),
    path("reports/<int:report_id>/recount/", views.recount_report, name="recount_report"),
    path("comments/", views.create_comment, name="create_comment"),
    path("imports/", views.contact_imports, name="contact_imports"),
    path("imports/start/", views.start_contact_import, name="start_contact_import"),
    path("imports/start-async/", views.astart_contact_import, name="astart_contact_import"),
    path("imports/<int:import_id>/", views.contact_import, name="contact_import"),
    path(
        "imports/<int:import_id>/progress/",
        views.contact_import_progress,
        name="contact_import_progress",
    ),
]
