"""WSGI entry point, for deployments that serve only sync views (async views then run
in a per-request event loop; prefer `project.asgi`)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

application = get_wsgi_application()
