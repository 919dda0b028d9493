"""How procrastinate's worker runs this project's tasks.

`PROCRASTINATE_ON_APP_READY` points at `on_app_ready`, which adds the result recorder of
`jobs.results` as worker middleware to every worker the app starts (`manage.py procrastinate
worker` included), and gives workers the connector of `jobs.connector`, which rides out a
database restart. Django connections around each task need nothing here: procrastinate's
Django app already closes broken or expired ones before and after every task, as Django
does around a request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import procrastinate


def on_app_ready(app: procrastinate.App) -> None:
    from procrastinate.contrib.django.django_connector import DjangoConnector

    from jobs.connector import ReconnectingDjangoConnector
    from jobs.results import record_result

    # Workers that survive a database restart (see jobs.connector). The app was built
    # with procrastinate's plain Django connector a moment ago; nothing has used it yet.
    if type(app.connector) is DjangoConnector:
        reconnecting = ReconnectingDjangoConnector(alias=app.connector.alias)
        app.connector = reconnecting
        app.job_manager.connector = reconnecting

    # A new dict: the current one may be the PROCRASTINATE_WORKER_DEFAULTS setting itself.
    app.worker_defaults = {
        **app.worker_defaults,
        # Wraps every job, sync or async, on the worker's event loop.
        "worker_middleware": [record_result, *app.worker_defaults.get("worker_middleware", [])],
    }
