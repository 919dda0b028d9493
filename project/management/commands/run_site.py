from __future__ import annotations

import math
import os
import socket
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from example import services
from jobs.conf import worker_shutdown_graceful_timeout
from jobs.management.arguments import whole_number
from jobs.processes import ProcessGroup, web_server_command, worker_command


class Command(BaseCommand):
    help = (
        "Run the whole site on this machine: apply migrations, then start the ASGI web "
        "server (uvicorn) and a procrastinate worker, and outside production print a fresh "
        "login for the example pages; Ctrl-C stops both cleanly."
    )
    # How long the worker may take to finish running jobs after Ctrl-C, on top of its
    # own graceful timeout, before it is killed.
    stop_margin = 10.0

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Address to bind the web server.")
        parser.add_argument(
            "--port", type=whole_number(1, 65535), default=8000, help="Web server port."
        )
        parser.add_argument(
            "--no-migrate", action="store_true", help="Do not apply migrations first."
        )

    def handle(self, *args: Any, host: str, port: int, no_migrate: bool, **opts: Any) -> None:
        self._ensure_port_free(host, port)
        if not no_migrate:
            call_command("migrate", interactive=False, verbosity=0)
            self.stdout.write("Migrations applied.")
        self._hint_superuser()
        demo_password = self._reset_demo_user()
        # Children open their own connections; this process needs none while it waits.
        connections.close_all()

        announced: list[bool] = []

        def announce() -> None:
            if not announced and self._accepts_connections(host, port):
                shown = "localhost" if host in {"127.0.0.1", "0.0.0.0", "::"} else host
                self.stdout.write(
                    self.style.SUCCESS(f"Site running at http://{shown}:{port}/")
                    + f"  (admin: http://{shown}:{port}/admin/). Press Ctrl-C to stop."
                )
                if demo_password is not None:
                    self.stdout.write(
                        f"Log in to the example pages at http://{shown}:{port}/admin/login/?next=/\n"
                        f"  username: {services.DEMO_USERNAME}\n"
                        f"  password: {demo_password}\n"
                        "  (a development user who may use the example pages and nothing else;"
                        " a new password at each start)"
                    )
                self.stdout.flush()
                announced.append(True)

        graceful = worker_shutdown_graceful_timeout()
        group = ProcessGroup(
            {
                "web server": web_server_command(
                    host, port, application="project.asgi:application"
                ),
                "worker": worker_command(),
            },
            env=dict(os.environ),
            stop_timeout=math.inf if graceful is None else graceful + self.stop_margin,
            log=self.stderr.write,
        )
        failure = group.run(on_tick=announce)
        if failure:
            raise CommandError(failure)
        self.stdout.write(self.style.SUCCESS("Web server and worker stopped."))
        if getattr(settings, "EMBEDDED_POSTGRES_DIR", None) is not None:
            self.stdout.write(
                "The embedded PostgreSQL keeps running for the next command; "
                "stop it with `python manage.py stop_postgres`."
            )

    def _ensure_port_free(self, host: str, port: int) -> None:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise CommandError(
                    f"Cannot listen on {host}:{port} ({exc.strerror}); pick another --port."
                ) from None

    def _reset_demo_user(self) -> str | None:
        """The example pages need a login: outside production, while they are on, give a
        newcomer a user for them (services.reset_demo_user). Never in production."""
        if getattr(settings, "PRODUCTION", True) or not getattr(settings, "EXAMPLE_PAGES", False):
            return None
        return services.reset_demo_user()

    def _hint_superuser(self) -> None:
        if not get_user_model().objects.filter(is_superuser=True).exists():
            self.stdout.write(
                "No admin user yet: create one with "
                "`python3 scripts/dev.py manage createsuperuser`."
            )

    @staticmethod
    def _accepts_connections(host: str, port: int) -> bool:
        target = "127.0.0.1" if host == "0.0.0.0" else "::1" if host == "::" else host
        try:
            with socket.create_connection((target, port), timeout=0.5):
                return True
        except OSError:
            return False
