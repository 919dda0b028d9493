from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from types import FrameType
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from jobs.processes import web_server_command, worker_command


def port_number(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"{port} is not between 1 and 65535")
    return port


class Command(BaseCommand):
    help = (
        "Run the whole site on this machine: apply migrations, then start the ASGI web "
        "server (uvicorn) and a procrastinate worker; Ctrl-C stops both cleanly."
    )
    # How long the worker may take to finish running jobs after Ctrl-C, on top of its
    # own graceful timeout, before it is killed.
    stop_margin = 10.0

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Address to bind the web server.")
        parser.add_argument("--port", type=port_number, default=8000, help="Web server port.")
        parser.add_argument(
            "--no-migrate", action="store_true", help="Do not apply migrations first."
        )

    def handle(self, *args: Any, host: str, port: int, no_migrate: bool, **opts: Any) -> None:
        self._ensure_port_free(host, port)
        if not no_migrate:
            call_command("migrate", interactive=False, verbosity=0)
            self.stdout.write("Migrations applied.")
        self._hint_superuser()
        # Children open their own connections; this process needs none while it waits.
        connections.close_all()

        environment = {**os.environ, "DJANGO_SETTINGS_MODULE": os.environ["DJANGO_SETTINGS_MODULE"]}
        children = {
            "web server": web_server_command(host, port),
            "worker": worker_command(),
        }
        processes = {
            name: subprocess.Popen(
                command,
                cwd=settings.BASE_DIR,
                env=environment,
                # Their own process group: Ctrl-C reaches only this command, which then
                # stops the web server first and lets the worker finish its jobs.
                start_new_session=True,
            )
            for name, command in children.items()
        }
        stop_requests: list[int] = []

        def request_stop(signum: int, frame: FrameType | None) -> None:
            stop_requests.append(signum)

        previous = {
            sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            failure = self._supervise(processes, host, port, stop_requests)
        finally:
            self._stop(processes, stop_requests)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
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

    def _hint_superuser(self) -> None:
        if not get_user_model().objects.filter(is_superuser=True).exists():
            self.stdout.write(
                "No admin user yet: create one with "
                "`python3 scripts/dev.py manage createsuperuser`."
            )

    def _supervise(
        self,
        processes: dict[str, subprocess.Popen[bytes]],
        host: str,
        port: int,
        stop_requests: list[int],
    ) -> str | None:
        """Wait until a stop is requested or a child dies; announce the URL once it serves."""
        announced = False
        while not stop_requests:
            for name, process in processes.items():
                code = process.poll()
                if code is not None:
                    return f"The {name} exited unexpectedly (exit code {code})."
            if not announced and self._accepts_connections(host, port):
                shown = "localhost" if host in {"127.0.0.1", "0.0.0.0", "::"} else host
                self.stdout.write(
                    self.style.SUCCESS(f"Site running at http://{shown}:{port}/")
                    + f"  (admin: http://{shown}:{port}/admin/). Press Ctrl-C to stop."
                )
                self.stdout.flush()
                announced = True
            time.sleep(0.2)
        return None

    @staticmethod
    def _accepts_connections(host: str, port: int) -> bool:
        target = "127.0.0.1" if host == "0.0.0.0" else "::1" if host == "::" else host
        try:
            with socket.create_connection((target, port), timeout=0.5):
                return True
        except OSError:
            return False

    def _stop(
        self, processes: dict[str, subprocess.Popen[bytes]], stop_requests: list[int]
    ) -> None:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        graceful = float(
            settings.PROCRASTINATE_WORKER_DEFAULTS.get("shutdown_graceful_timeout", 30)
        )
        deadline = time.monotonic() + graceful + self.stop_margin
        for name, process in processes.items():
            # A second Ctrl-C means "now": kill whatever is left.
            while process.poll() is None and time.monotonic() < deadline and len(stop_requests) < 2:
                time.sleep(0.1)
            if process.poll() is None:
                self.stderr.write(f"The {name} did not stop in time; killing it.")
                process.kill()
                process.wait()
