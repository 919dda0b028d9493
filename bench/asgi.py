"""ASGI entry point of the benchmark's web server (uvicorn `--factory`): the project's
application answering the URLs of bench.urls.

Only that server process runs this. It changes ROOT_URLCONF there, as Django's
`override_settings` would, so the site's own URLs never include the benchmark views. Django
is imported inside the factory: uvicorn imports this module before settings are loaded.
"""

from __future__ import annotations

from typing import Any


def application() -> Any:
    from django.core.asgi import get_asgi_application

    handler = get_asgi_application()
    from django.conf import settings

    settings.ROOT_URLCONF = "bench.urls"
    return handler
