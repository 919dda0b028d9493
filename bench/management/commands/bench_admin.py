"""`manage.py bench_admin`: how fast the admin, the dashboard and the metrics answer on a
queue of millions of jobs."""

from __future__ import annotations

import json
import os
import random
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from bench.http_load import admin_login, time_requests
from bench.processes import web_server
from bench.scratch import ScratchDatabase, scratch_database
from bench.seeding import create_superuser, refresh_heartbeats, seed_queue_history
from bench.timing import time_statement
from jobs.management.arguments import whole_number

JOBS = "/admin/procrastinate/procrastinatejob/"
EVENTS = "/admin/procrastinate/procrastinateevent/"
TARGET_MS = 100.0
USERNAME = "bench"

# (label, path for the n-th request): what an operator opens, most of it at random ids.
Page = tuple[str, Callable[[random.Random, int], str]]


def pages(jobs: int) -> list[Page]:
    def job_id(picker: random.Random) -> int:
        return picker.randint(1, jobs)

    return [
        ("admin job list", lambda p, n: JOBS),
        ("admin list: status=failed", lambda p, n: f"{JOBS}?status=failed"),
        ("admin list: task (30% of jobs)", lambda p, n: f"{JOBS}?task=jobs.build_report"),
        (
            "admin list: task (0.01% of jobs)",
            lambda p, n: f"{JOBS}?task=jobs.compute_daily_statistics",
        ),
        ("admin list: queue=legacy", lambda p, n: f"{JOBS}?queue=legacy"),
        ("admin list: deferred last hour", lambda p, n: f"{JOBS}?deferred_from=-1h"),
        (
            "admin list: failed, task, last 24 h",
            lambda p, n: f"{JOBS}?status=failed&task=jobs.build_report&deferred_from=-24h",
        ),
        ("admin search: job id", lambda p, n: f"{JOBS}?q={job_id(p)}"),
        ("admin search: lock", lambda p, n: f"{JOBS}?q=report-{p.randint(0, 4999)}"),
        ("admin search: lock prefix", lambda p, n: f"{JOBS}?q=report-{p.randint(100, 499)}*"),
        ("admin search: task name", lambda p, n: f"{JOBS}?q=send_notification"),
        ("admin job page", lambda p, n: f"{JOBS}{job_id(p)}/change/"),
        ("admin event list", lambda p, n: EVENTS),
        ("admin events: type=failed", lambda p, n: f"{EVENTS}?type=failed"),
        ("admin events: of a job", lambda p, n: f"{EVENTS}?q={job_id(p)}"),
        ("dashboard page", lambda p, n: "/dashboard/"),
        ("dashboard panels (refresh)", lambda p, n: "/dashboard/panels/"),
        ("dashboard data (JSON)", lambda p, n: "/dashboard/data/"),
        ("metrics (Prometheus)", lambda p, n: "/metrics/"),
        ("health", lambda p, n: "/health/"),
    ]


# What procrastinate's stock job admin runs on every load of its list: an exact count
# (twice: filtered and in all) and a DISTINCT per filter on a free-text column.
STOCK_QUERIES = (
    ("exact count of all jobs", "SELECT count(*) FROM procrastinate_jobs"),
    (
        "DISTINCT task_name (a filter)",
        "SELECT DISTINCT task_name FROM procrastinate_jobs ORDER BY task_name",
    ),
    ("DISTINCT lock (a filter)", "SELECT DISTINCT lock FROM procrastinate_jobs ORDER BY lock"),
)


class Command(BaseCommand):
    help = (
        "Seed a scratch database with millions of jobs and time the admin's job and event "
        "pages, the dashboard and its data, and the metrics endpoint (median, p95, max)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--jobs",
            type=whole_number(minimum=1000),
            default=10_000_000,
            help="Jobs to seed (default 10,000,000).",
        )
        parser.add_argument(
            "--hours",
            type=whole_number(minimum=1, maximum=24 * 365),
            default=24 * 7,
            help="Period the jobs were deferred over, ending now (default 168: a week).",
        )
        parser.add_argument(
            "--requests",
            type=whole_number(minimum=3),
            default=30,
            help="Timed requests per page (default 30).",
        )
        parser.add_argument(
            "--no-stock-queries",
            action="store_true",
            help="Skip timing the queries of procrastinate's stock admin list.",
        )
        parser.add_argument("--keep", action="store_true", help="Keep the scratch database.")
        parser.add_argument(
            "--reuse",
            action="store_true",
            help="Time the scratch database an earlier run kept (--keep) instead of seeding.",
        )
        parser.add_argument("--json", type=Path, help="Also write the figures to this JSON file.")

    def handle(self, *args: Any, **options: Any) -> None:
        name = f"{connection.settings_dict['NAME']}_bench_admin"
        try:
            if options["reuse"]:
                database = ScratchDatabase.named(name)
                self.stdout.write(f"Scratch database {name!r}: reusing it...")
                figures = self._time(database, options, self._describe(database))
            else:
                self.stdout.write(f"Scratch database {name!r}: creating and migrating...")
                with scratch_database(name, keep=options["keep"]) as database:
                    figures = self._time(database, options, self._seed(database, options))
        except (RuntimeError, OSError, psycopg.Error) as exc:
            raise CommandError(str(exc)) from exc
        self._report(figures)
        if options["json"]:
            options["json"].write_text(json.dumps(figures, indent=2))
            self.stdout.write(f"Figures written to {options['json']}.")

    def _seed(self, database: ScratchDatabase, options: dict[str, Any]) -> dict[str, Any]:
        jobs, hours = options["jobs"], options["hours"]
        self.stdout.write(f"Seeding {jobs:,} jobs deferred over {hours} hours, with events...")
        seconds = seed_queue_history(
            database, jobs, hours=hours, on_progress=lambda m: self.stdout.write(f"  {m}")
        )
        self.stdout.write(f"  seeded in {seconds:.0f} s")
        return {**self._describe(database), "seed_seconds": round(seconds, 1)}

    def _describe(self, database: ScratchDatabase) -> dict[str, Any]:
        """What the scratch database holds (also for a reused one)."""
        with database.connect() as conn:
            jobs, events, first, last, lag = conn.execute(
                """
                SELECT (SELECT max(id) FROM procrastinate_jobs),
                       (SELECT reltuples::bigint FROM pg_class
                         WHERE oid = 'procrastinate_events'::regclass),
                       (SELECT min(at) FROM procrastinate_events WHERE type = 'deferred'),
                       (SELECT max(at) FROM procrastinate_events WHERE type = 'deferred'),
                       extract(epoch FROM now() - (SELECT max(at) FROM procrastinate_events
                                                    WHERE type = 'deferred'))::float8
                """
            ).fetchone()  # type: ignore[misc]
        if not jobs:
            raise CommandError(f"{database.name!r} holds no jobs: seed it first.")
        return {
            "jobs_seeded": jobs,
            "events_seeded": events,
            "hours": round((last - first).total_seconds() / 3600),
            "seed_seconds": None,
            "history_ended_seconds_ago": lag,
        }

    def _time(
        self, database: ScratchDatabase, options: dict[str, Any], seeded: dict[str, Any]
    ) -> dict[str, Any]:
        figures: dict[str, Any] = {**seeded, "pages": {}, "stock_queries_ms": {}}
        password = secrets.token_urlsafe(16)
        create_superuser(database, USERNAME, password)
        token = secrets.token_urlsafe(24)
        picker = random.Random(5)
        # The metrics read the last JOBS_METRICS_WINDOW_SECONDS (300 s by default); the
        # seeded history ended a while ago, so the window reaches back into it, by 300 s
        # and the couple of minutes the pages before the metrics take to time, or the
        # metrics would be timed on an empty window.
        window = round(seeded["history_ended_seconds_ago"]) + 300 + 120
        figures["metrics_window_seconds"] = window
        # As in production: pooled connections (on there by default), DEBUG off.
        with web_server(
            database,
            DATABASE_POOL="1",
            DEBUG="0",
            JOBS_METRICS_TOKEN=token,
            JOBS_METRICS_WINDOW_SECONDS=str(window),
        ) as port:
            headers = {
                "Cookie": admin_login(port, USERNAME, password),
                "Authorization": f"Bearer {token}",
            }
            for label, path in pages(figures["jobs_seeded"]):
                if label == "health":
                    # The seeded workers' heartbeats are as old as the seeding: freshen
                    # them, as live workers would, so /health/ answers 200.
                    refresh_heartbeats(database)
                # The first request of each page fills caches (PostgreSQL's buffers, the
                # dashboard's settled minutes): reported apart, then two more warm up.
                first, _ = time_requests(port, [("GET", path(picker, 0), None)], headers)
                time_requests(port, [("GET", path(picker, n), None) for n in range(2)], headers)
                latency, statuses = time_requests(
                    port,
                    [("GET", path(picker, n), None) for n in range(options["requests"])],
                    headers,
                )
                if set(statuses) != {200}:
                    raise CommandError(f"{label}: HTTP {sorted(set(statuses))}")
                figures["pages"][label] = {**latency.__dict__, "first_ms": first.median_ms}
                self.stdout.write(f"  {label}: {latency.median_ms:.1f} ms")
        if not options["no_stock_queries"]:
            for label, sql in STOCK_QUERIES:
                seconds = time_statement(database, sql)
                figures["stock_queries_ms"][label] = round(seconds * 1000, 1)
                self.stdout.write(f"  stock admin's {label}: {seconds * 1000:.0f} ms")
        figures["load_average"] = [round(value, 2) for value in os.getloadavg()]
        return figures

    def _report(self, figures: dict[str, Any]) -> None:
        write = self.stdout.write
        write("")
        seeded = f"; seeded in {figures['seed_seconds']:.0f} s" if figures["seed_seconds"] else ""
        write(
            f"Admin, dashboard and metrics on {figures['jobs_seeded']:,} jobs and "
            f"{figures['events_seeded']:,} events (deferred over {figures['hours']} h{seeded})"
        )
        write(f"{'page':<38}{'median':>10}{'p95':>10}{'max':>10}{'first':>10}")
        slow = []
        for label, row in figures["pages"].items():
            write(
                f"{label:<38}{row['median_ms']:>8.1f}ms{row['p95_ms']:>8.1f}ms"
                f"{row['max_ms']:>8.1f}ms{row['first_ms']:>8.1f}ms"
            )
            if row["median_ms"] >= TARGET_MS:
                slow.append(label)
        if figures["stock_queries_ms"]:
            write("procrastinate's stock job list runs, on every page load:")
            for label, ms in figures["stock_queries_ms"].items():
                write(f"  {label:<36}{ms:>8.0f}ms")
        one, five, _ = figures["load_average"]
        write(f"Load average of the machine meanwhile: {one} (1 min), {five} (5 min).")
        if slow:
            write(self.style.WARNING(f"Median at or over {TARGET_MS:.0f} ms: {', '.join(slow)}."))
        else:
            write(self.style.SUCCESS(f"Every page's median is under {TARGET_MS:.0f} ms."))
