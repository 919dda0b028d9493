from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from bench.http_load import requests_per_second, time_requests
from bench.processes import web_server
from bench.scratch import ScratchDatabase, scratch_database
from bench.seeding import seed_finished_jobs
from jobs.management.arguments import seconds, whole_number


class Command(BaseCommand):
    help = (
        "Benchmark the job API on a scratch database seeded with finished jobs: status "
        "latency (median, 95th, 99th percentile) and defer requests per second."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--jobs", type=whole_number(1000), default=1_000_000, help="Finished jobs to seed."
        )
        parser.add_argument(
            "--requests", type=whole_number(100), default=2000, help="Status requests to time."
        )
        parser.add_argument(
            "--seconds",
            type=seconds(0, 3600, exclusive_minimum=True),
            default=5.0,
            help="Length of each defer run.",
        )
        parser.add_argument(
            "--clients", type=whole_number(1), default=4, help="Concurrent defer clients."
        )
        parser.add_argument("--keep", action="store_true", help="Keep the scratch database.")
        parser.add_argument("--json", type=Path, help="Also write the figures to this JSON file.")

    def handle(self, *args: Any, **options: Any) -> None:
        name = f"{connection.settings_dict['NAME']}_bench_api"
        self.stdout.write(f"Scratch database {name!r}: creating and migrating...")
        try:
            with scratch_database(name, keep=options["keep"]) as database:
                figures = self._run(database, options)
        except (RuntimeError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        self._report(figures)
        if options["json"]:
            options["json"].write_text(json.dumps(figures, indent=2))
            self.stdout.write(f"Figures written to {options['json']}.")

    def _run(self, database: ScratchDatabase, options: dict[str, Any]) -> dict[str, Any]:
        jobs = options["jobs"]
        self.stdout.write(f"Seeding {jobs:,} finished jobs with their events and results...")
        seed_seconds = seed_finished_jobs(database, jobs)
        self.stdout.write(f"  seeded in {seed_seconds:.1f} s")
        token = database.manage("create_api_token", "bench", "--tasks", "jobs.build_report")
        headers = {
            "Authorization": f"Bearer {token.strip().splitlines()[-1]}",
            "Content-Type": "application/json",
        }
        figures: dict[str, Any] = {"jobs_seeded": jobs, "seed_seconds": round(seed_seconds, 1)}
        picker = random.Random(1)
        # Pooled connections, as in production (DATABASE_POOL is on there by default).
        with web_server(database, DATABASE_POOL="1") as port:
            for label, prefix in (("sync", "/api"), ("async", "/api/async")):
                ids = [picker.randint(1, jobs) for _ in range(options["requests"])]
                time_requests(
                    port, [("GET", f"{prefix}/jobs/{i}/", None) for i in ids[:200]], headers
                )
                latency, statuses = time_requests(
                    port, [("GET", f"{prefix}/jobs/{i}/", None) for i in ids], headers
                )
                if set(statuses) != {200}:
                    raise CommandError(f"status requests failed: {sorted(set(statuses))}")
                figures[f"status_{label}"] = latency.__dict__
                self.stdout.write(f"  status ({label}) timed")

                def defer(n: int, prefix: str = prefix) -> tuple[str, str, bytes]:
                    body = {"task": "jobs.build_report", "kwargs": {"report_id": n}}
                    return ("POST", f"{prefix}/jobs/", json.dumps(body).encode())

                rate, counts = requests_per_second(
                    port, defer, headers, seconds=options["seconds"], clients=options["clients"]
                )
                if set(counts) != {201}:
                    raise CommandError(f"defer requests failed: {counts}")
                figures[f"defer_{label}_per_second"] = round(rate, 1)
                self.stdout.write(f"  defer ({label}) timed")
        return figures

    def _report(self, figures: dict[str, Any]) -> None:
        self.stdout.write("")
        self.stdout.write(f"Job API on {figures['jobs_seeded']:,} finished jobs")
        self.stdout.write(f"{'endpoint':<28}{'median':>10}{'p95':>10}{'p99':>10}{'max':>10}")
        for label in ("sync", "async"):
            row = figures[f"status_{label}"]
            self.stdout.write(
                f"{'GET /api' + ('/async' if label == 'async' else '') + '/jobs/<id>/':<28}"
                f"{row['median_ms']:>8.2f}ms{row['p95_ms']:>8.2f}ms"
                f"{row['p99_ms']:>8.2f}ms{row['max_ms']:>8.2f}ms"
            )
        for label in ("sync", "async"):
            path = "POST /api" + ("/async" if label == "async" else "") + "/jobs/"
            self.stdout.write(f"{path:<28}{figures[f'defer_{label}_per_second']:>10.1f} requests/s")
        verdict = max(figures["status_sync"]["p95_ms"], figures["status_async"]["p95_ms"])
        style = self.style.SUCCESS if verdict < 20 else self.style.WARNING
        self.stdout.write(style(f"Status p95 {verdict:.2f} ms (target: under 20 ms)."))
