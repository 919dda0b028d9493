from importlib import import_module

from django.apps import AppConfig
from django.core import checks
from django.db.backends.signals import connection_created


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Background jobs"

    def ready(self) -> None:
        from jobs.conf import check_settings
        from jobs.out_of_range_times import tolerate_out_of_range_times_on_django_connection
        from jobs.readonly import protect_procrastinate_models
        from jobs.worker import install_on_procrastinate_app

        checks.register(check_settings)
        # Django registers its TASKS check when django.tasks is first imported, which may
        # otherwise only happen at the first enqueue: `manage.py check` would then say
        # nothing of a misconfigured backend (jobs.django_tasks reports through it).
        import_module("django.tasks")
        protect_procrastinate_models()
        install_on_procrastinate_app()
        # After Django's backend set up the connection (its time zone's loader included),
        # before anything reads through it: a job row with a time before year 1 or after
        # 9999 must not fail the page or command that lists it (jobs/out_of_range_times.py).
        connection_created.connect(
            tolerate_out_of_range_times_on_django_connection,
            dispatch_uid="jobs.out_of_range_times",
        )
