from django.contrib import admin
from django.urls import include, path

from jobs import admin_views

urlpatterns = [
    # Staff pages without a model, inside the admin's look and login (jobs/admin_views.py).
    path(
        "admin/jobs/periodic-tasks/",
        admin.site.admin_view(admin_views.periodic_tasks),
        name="jobs-admin-periodic-tasks",
    ),
    path(
        "admin/jobs/run-command/",
        admin.site.admin_view(admin_views.run_command),
        name="jobs-admin-run-command",
    ),
    path("admin/", admin.site.urls),
    path("", include("jobs.urls")),
    # The example site (/, /activity/, /notifications/, /reports/).
    path("", include("example.urls")),
]
