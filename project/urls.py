from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("jobs.urls")),
    # The example site (/, /activity/, /notifications/, /reports/).
    path("", include("example.urls")),
]
