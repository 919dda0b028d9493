from __future__ import annotations

import math
import os
import re
import socket
from argparse import ArgumentTypeError
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from jobs.conf import worker_shutdown_graceful_timeout
from jobs.management.arguments import seconds, whole_number
from jobs.processes import ProcessGroup, worker_command

QUEUE = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
DELETE_JOBS = ("never", "successful", "always")


def queue_list(value: str) -> list[str]:
    queues = [queue.strip() for queue in value.split(",") if queue.strip()]
    for queue in queues:
        if not QUEUE.match(queue):
            raise ArgumentTypeError(f"{queue!r} is not a queue name")
    if not queues:
        raise ArgumentTypeError("give at least one queue, or leave --queues out for all")
    return queues


# Jobs per worker process. Short jobs of a process with more slots end together more often,
# so their ends and its claims share round trips: on 2 cores, no-op jobs drained 17% (sync)
# and 87% (async) faster with 8 than with 4, in 3 alternating rounds (README, "Processes
# and concurrency"). Each running sync job holds a Django connection:
# DATABASE_POOL_MAX_SIZE = concurrency + 1.
DEFAULT_CONCURRENCY = 8


class Command(BaseCommand):
    help = (
        "Start this machine's set of procrastinate worker processes (the recommended "
        "production setup), restart any that crash, and stop them gracefully on SIGTERM."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--processes",
            type=whole_number(1, 256),
            default=os.cpu_count() or 1,
            help="Worker processes (default: one per CPU core).",
        )
        parser.add_argument(
            "--concurrency",
            type=whole_number(1, 1000),
            default=DEFAULT_CONCURRENCY,
            help="Jobs each process runs at once (async tasks on its event loop, sync "
            f"tasks in threads). Default {DEFAULT_CONCURRENCY}.",
        )
        parser.add_argument(
            "--queues", type=queue_list, default=None, help="Comma-separated queues (default: all)."
        )
        parser.add_argument(
            "--name",
            default=socket.gethostname(),
            help="Prefix of the worker names, shown in results (default: the host name).",
        )
        parser.add_argument(
            "--shutdown-graceful-timeout",
            type=seconds(0, 86_400),
            default=None,
            help="Seconds running jobs get to finish after SIGTERM (default: the setting).",
        )
        parser.add_argument(
            "--delete-jobs",
            choices=DELETE_JOBS,
            default="never",
            help="Delete jobs when they finish (their results go too). Default: keep them "
            "for the retention task.",
        )
        parser.add_argument(
            "--fetch-job-polling-interval",
            type=seconds(0, 86_400),
            default=None,
            help="Fallback polling interval in seconds (LISTEN/NOTIFY wakes workers anyway).",
        )
        parser.add_argument(
            "--no-listen-notify",
            action="store_true",
            help="Poll only (for a pooler in transaction mode).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        graceful = options["shutdown_graceful_timeout"]
        if graceful is None:
            graceful = worker_shutdown_graceful_timeout()
        common = [
            "--concurrency",
            str(options["concurrency"]),
            "--delete-jobs",
            options["delete_jobs"],
        ]
        if graceful is not None:
            common += ["--shutdown-graceful-timeout", str(graceful)]
        if options["queues"]:
            common += ["--queues", ",".join(options["queues"])]
        if options["fetch_job_polling_interval"] is not None:
            common += ["--fetch-job-polling-interval", str(options["fetch_job_polling_interval"])]
        if options["no_listen_notify"]:
            common.append("--no-listen-notify")
        commands = {
            f"{options['name']}-{number}": worker_command(
                "--name", f"{options['name']}-{number}", *common
            )
            for number in range(1, options["processes"] + 1)
        }
        # The workers load these same settings: a database Django cannot open there would
        # make them crash and be restarted forever, so it is refused here, once, clearly.
        for alias, database in settings.DATABASES.items():
            # Django's own test: None (unlimited) is persistent too.
            pooled = database.get("OPTIONS", {}).get("pool")
            if pooled and database.get("CONN_MAX_AGE", 0) != 0:
                raise CommandError(
                    f"DATABASES[{alias!r}] sets both CONN_MAX_AGE and OPTIONS['pool']: they "
                    "exclude each other (a pool already reuses connections); set "
                    "CONN_MAX_AGE to 0."
                )
        queues = ", ".join(options["queues"]) if options["queues"] else "all queues"
        self.stdout.write(
            f"Starting {options['processes']} worker process(es), concurrency "
            f"{options['concurrency']} each, on {queues}; Ctrl-C or SIGTERM stops them."
        )
        self.stdout.flush()
        connections.close_all()
        group = ProcessGroup(
            commands,
            env=dict(os.environ),
            # Workers without a graceful timeout wait for their jobs however long: so do we.
            stop_timeout=math.inf if graceful is None else graceful + 10,
            restart=True,
            log=self.stderr.write,
        )
        failure = group.run()
        if failure:
            raise CommandError(failure)
        self.stdout.write(self.style.SUCCESS("All worker processes stopped."))
