"""URLs of the benchmark's web server only (bench.asgi); the site's URLs never include them."""

from __future__ import annotations

from django.urls import path

from bench import views

urlpatterns = [
    path("bench/sync/write/", views.write),
    path("bench/sync/write-and-defer/", views.write_and_defer),
    path("bench/async/write/", views.awrite),
    path("bench/async/write-and-defer/", views.awrite_and_defer),
]
