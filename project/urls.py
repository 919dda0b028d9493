from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("jobs.urls")),
    # The example site (/, /activity/, /notifications/, /reports/, /comments/, /imports/).
    path("", include("example.urls")),
]
