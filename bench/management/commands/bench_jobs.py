from __future__ import annotations

import json
import logging
import os
from argparse import ArgumentTypeError
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from bench import celery_drain, scaling, worker_tasks
from bench.chart import write_chart
from bench.job_figures import run_all
from bench.scratch import measure_in_scratch_database, require_scratch_database
from jobs.management.arguments import seconds, whole_number
from jobs.management.commands import run_workers


def kind_list(value: str) -> list[str]:
    kinds = [kind.strip() for kind in value.split(",") if kind.strip()]
    unknown = sorted(set(kinds) - set(worker_tasks.TASKS))
    if unknown or not kinds:
        raise ArgumentTypeError(f"choose among {', '.join(worker_tasks.TASKS)}")
    return kinds


class Command(BaseCommand):
    help = (
        "Benchmark the job system on a scratch database next to yours: defer rate, drain "
        "throughput (stock worker vs run_workers, and Celery + Redis when redis-server is on "
        "the PATH), Django's task API beside procrastinate's, "
        "limits (the app's fetch beside procrastinate's, a limited drain, held-back CPU), "
        "pickup latency with and without LISTEN/NOTIFY and under load, the machine's ceiling "
        "(PostgreSQL's cost per job, no worker), jobs/s against processes x concurrency "
        "(--grid), a deferring view's overhead under uvicorn; a table, JSON and a PNG."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--jobs", type=whole_number(100), default=5000, help="Jobs per drain run."
        )
        parser.add_argument(
            "--kinds", type=kind_list, default=list(worker_tasks.TASKS), help="Task kinds."
        )
        parser.add_argument(
            "--repeat",
            type=whole_number(1, 99),
            default=3,
            help=(
                "Rounds of each comparison (the setups' drains per kind; Django's task API "
                "beside procrastinate's), alternating; the median run is reported."
            ),
        )
        parser.add_argument("--processes", type=whole_number(1, 64), default=os.cpu_count() or 1)
        parser.add_argument(
            "--concurrency",
            type=whole_number(1, 500),
            default=run_workers.DEFAULT_CONCURRENCY,
            help="Slots per process of the recommended setup (run_workers' default).",
        )
        parser.add_argument(
            "--celery-concurrency",
            type=whole_number(1, 500),
            default=os.cpu_count() or 1,
            help="Processes of the Celery worker (prefork) in the drain comparison; cores.",
        )
        parser.add_argument(
            "--defer-count",
            type=whole_number(10),
            default=2000,
            help="Jobs per defer-rate run (and per enqueue() / defer() round).",
        )
        parser.add_argument(
            "--batch-jobs",
            type=whole_number(100),
            default=20000,
            help="Jobs per drain of the batch comparison (one batch vs as many plain jobs).",
        )
        parser.add_argument(
            "--big-batch",
            type=whole_number(0),
            default=0,
            help="Also drain one batch of this many no-op jobs (0: none).",
        )
        parser.add_argument(
            "--idle-seconds",
            type=seconds(1, 600),
            default=10,
            help="How long the CPU of idle workers, then of workers with only held-back jobs, "
            "is measured.",
        )
        parser.add_argument(
            "--held-jobs",
            type=whole_number(1),
            default=1000,
            help="Jobs a concurrency limit holds back while the workers' CPU is measured.",
        )
        parser.add_argument("--latency-count", type=whole_number(10), default=300)
        parser.add_argument("--polling-latency-count", type=whole_number(5), default=20)
        parser.add_argument("--poll-interval", type=seconds(0.05, 60), default=1.0)
        parser.add_argument(
            "--load-latency-count",
            type=whole_number(10),
            default=300,
            help="Urgent jobs whose pickup latency is measured while the recommended setup "
            "drains a backlog of --jobs jobs (kept topped up).",
        )
        parser.add_argument(
            "--load-latency-rate",
            type=whole_number(1, 1000),
            default=20,
            help="Urgent jobs deferred per second, at a steady pace, under load.",
        )
        parser.add_argument(
            "--ceiling-connections",
            type=whole_number(1, scaling.MAX_CEILING_CONNECTIONS),
            help="Connections that fetch and finish --jobs jobs with no worker (the ceiling); "
            "by default as many as the recommended setup's slots (--processes x --concurrency).",
        )
        parser.add_argument(
            "--grid",
            type=scaling.grid_cells,
            default=[],
            help="Also drain --jobs no-op sync jobs with run_workers for each "
            "PROCESSESxCONCURRENCY cell, e.g. 1x1,1x4,2x4,2x8,4x4 (default: none).",
        )
        parser.add_argument(
            "--grid-repeat",
            type=whole_number(1, 99),
            default=1,
            help="Rounds of each --grid cell, alternating; the median run is reported.",
        )
        parser.add_argument("--requests", type=whole_number(20), default=500)
        parser.add_argument(
            "--soak", type=whole_number(0), default=0, help="Jobs for a soak run (0: none)."
        )
        parser.add_argument(
            "--output", type=Path, default=Path(settings.BASE_DIR) / "artifacts" / "bench_jobs"
        )
        parser.add_argument("--keep", action="store_true", help="Keep the scratch database.")
        # Internal: the measuring child process, whose default database is the scratch one.
        parser.add_argument("--measure-into", type=Path, help="(internal)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["measure_into"]:
            self._measure(options)
            return
        figures = measure_in_scratch_database(
            "bench_jobs", self._forwarded(options), keep=options["keep"], log=self.stdout.write
        )
        output: Path = options["output"]
        output.mkdir(parents=True, exist_ok=True)
        (output / "figures.json").write_text(json.dumps(figures, indent=2))
        write_chart(figures, output / "chart.png")
        self._report(figures)
        self.stdout.write(f"Figures: {output / 'figures.json'}; chart: {output / 'chart.png'}")

    def _forwarded(self, options: dict[str, Any]) -> list[str]:
        """The options of this run, for the measuring process."""
        return [
            "--jobs", str(options["jobs"]), "--kinds", ",".join(options["kinds"]),
            "--repeat", str(options["repeat"]),
            "--processes", str(options["processes"]), "--concurrency", str(options["concurrency"]),
            "--celery-concurrency", str(options["celery_concurrency"]),
            "--defer-count", str(options["defer_count"]),
            "--batch-jobs", str(options["batch_jobs"]), "--big-batch", str(options["big_batch"]),
            "--idle-seconds", str(options["idle_seconds"]),
            "--held-jobs", str(options["held_jobs"]),
            "--latency-count", str(options["latency_count"]),
            "--polling-latency-count", str(options["polling_latency_count"]),
            "--poll-interval", str(options["poll_interval"]),
            "--load-latency-count", str(options["load_latency_count"]),
            "--load-latency-rate", str(options["load_latency_rate"]),
            "--ceiling-connections", str(scaling.ceiling_connections(options)),
            "--grid", ",".join(f"{p}x{c}" for p, c in options["grid"]),
            "--grid-repeat", str(options["grid_repeat"]),
            "--requests", str(options["requests"]), "--soak", str(options["soak"]),
        ]  # fmt: skip

    def _measure(self, options: dict[str, Any]) -> None:
        require_scratch_database("bench_jobs")
        # This process defers thousands of jobs; a log line for each says nothing useful.
        procrastinate_logger = logging.getLogger("procrastinate")
        level = procrastinate_logger.level
        procrastinate_logger.setLevel(logging.WARNING)

        def log(line: str) -> None:
            self.stdout.write(line)
            self.stdout.flush()

        try:
            figures = run_all(options, log=log)
        finally:
            procrastinate_logger.setLevel(level)
        options["measure_into"].write_text(json.dumps(figures))

    def _report(self, figures: dict[str, Any]) -> None:
        write = self.stdout.write
        write("")
        write(f"Machine: {figures['cpu_count']} CPU cores")
        rates = figures["defer_per_second"]
        write("Defer rate (jobs/s):")
        write(f"  sync view path, one by one    {rates['sync_one_by_one']:>10,.1f}")
        write(f"  async view path, one by one   {rates['async_one_by_one']:>10,.1f}")
        write(f"  batch_defer (1000 per call)   {rates['batch_defer']:>10,.1f}")
        recommended = figures["recommended"]
        write(
            "Drain throughput (jobs/s): stock = manage.py procrastinate worker; recommended = "
            f"run_workers --processes {recommended['processes']} "
            f"--concurrency {recommended['concurrency']}"
        )
        for key, value in figures["drain"].items():
            runs = value["runs_per_second"]
            spread = (
                f"; runs: {', '.join(f'{rate:,.0f}' for rate in runs)}" if len(runs) > 1 else ""
            )
            write(
                f"  {key:<28}{value['per_second']:>10,.1f}   "
                f"({value['jobs']:,} jobs in {value['seconds']} s{spread})"
            )
        for kind in dict.fromkeys(key.split("/")[0] for key in figures["drain"]):
            stock = figures["drain"][f"{kind}/stock"]["per_second"]
            ratio = figures["drain"][f"{kind}/recommended"]["per_second"] / stock
            write(f"  {kind}: recommended / stock = {ratio:.2f}")
        for line in celery_drain.report_lines(figures["celery"]):
            write(f"  {line}")
        self._report_django_tasks(figures["django_tasks"], recommended)
        self._report_batches(figures["batches"], recommended)
        self._report_limits(figures["limits"], recommended)
        for label, key in (
            ("LISTEN/NOTIFY", "pickup_listen_notify"),
            ("polling only", "pickup_polling"),
        ):
            row = figures[key]
            extra = f" (every {row['interval_seconds']} s)" if "interval_seconds" in row else ""
            write(
                f"Pickup latency, {label}{extra}: median {row['median_ms']:.2f} ms, "
                f"p95 {row['p95_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, "
                f"max {row['max_ms']:.2f} ms"
            )
        for line in scaling.report_lines(figures):
            write(line)
        for flavour, row in figures["view_overhead"].items():
            write(
                f"Deferring in a {flavour} view under uvicorn adds "
                f"{row['overhead_median_ms']:.2f} ms at the median "
                f"({row['without_defer']['median_ms']:.2f} -> "
                f"{row['with_defer']['median_ms']:.2f} ms), {row['overhead_p95_ms']:.2f} ms at p95"
            )
        if "soak" in figures:
            soak = figures["soak"]
            write(
                f"Soak: {soak['jobs']:,} jobs at {soak['per_second']:,.1f}/s; worker RSS "
                f"{[r // 2**20 for r in soak['worker_rss_start']]} MiB -> "
                f"{[r // 2**20 for r in soak['worker_rss_end']]} MiB; tables at the end "
                f"{ {k: v // 2**20 for k, v in soak['table_sizes_end'].items()} } MiB"
            )

    def _report_limits(self, figures: dict[str, Any], recommended: dict[str, int]) -> None:
        write = self.stdout.write
        write(
            "Limits (jobs/s, medians of alternating rounds; run_workers --processes "
            f"{recommended['processes']} --concurrency {recommended['concurrency']}):"
        )
        unlimited = figures["unlimited"]
        runs = "; ".join(
            f"{label} runs: {', '.join(f'{r:,.0f}' for r in unlimited[label]['runs_per_second'])}"
            for label in ("app_fetch", "procrastinate_fetch")
        )
        write(
            "  unlimited no-op async jobs, the app's fetch vs procrastinate's  "
            f"{unlimited['app_fetch']['per_second']:>10,.1f} vs "
            f"{unlimited['procrastinate_fetch']['per_second']:>10,.1f}   "
            f"ratio {unlimited['ratio']:.2f}   ({runs})"
        )
        limited = figures["limited"]
        write(
            f"  no-op async jobs, {limited['concurrency']} at once per key over "
            f"{limited['keys']} keys  {limited['per_second']:>10,.1f}   "
            f"({limited['jobs']:,} jobs in {limited['seconds']} s)"
        )
        cpu = figures["held_cpu"]
        write(
            "  workers' CPU (s per minute, measured over "
            f"{cpu['seconds']:g} s): idle {cpu['idle_cpu_seconds_per_minute']:.2f}; "
            f"with only {cpu['held_jobs']:,} held-back jobs "
            f"{cpu['held_cpu_seconds_per_minute']:.2f}"
        )

    def _report_batches(self, figures: dict[str, Any], recommended: dict[str, int]) -> None:
        write = self.stdout.write
        write(
            "Batches beside plain jobs (jobs/s, medians of alternating rounds; ratio = "
            f"batched / plain; run_workers --processes {recommended['processes']} "
            f"--concurrency {recommended['concurrency']}):"
        )
        for flavour in ("sync", "async"):
            row = figures[flavour]
            runs = "; ".join(
                f"{label} runs: {', '.join(f'{r:,.0f}' for r in row[label]['runs_per_second'])}"
                for label in ("batched", "plain")
            )
            write(
                f"  {row['batched']['jobs']:,} no-op {flavour} jobs, one batch vs plain"
                f"{row['batched']['per_second']:>10,.1f} vs {row['plain']['per_second']:>10,.1f}"
                f"   ratio {row['ratio']:.2f}   ({runs})"
            )
        if "big_batch" in figures:
            big = figures["big_batch"]
            write(
                f"  one batch of {big['jobs']:,} no-op sync jobs: {big['per_second']:,.1f} jobs/s "
                f"in {big['seconds']} s, callback run {big['callbacks']} time(s)"
            )

    def _report_django_tasks(self, figures: dict[str, Any], recommended: dict[str, int]) -> None:
        write = self.stdout.write
        write(
            "Django's task API beside procrastinate's (jobs/s, medians of alternating rounds; "
            "ratio = Django / procrastinate):"
        )
        rows = [
            ("enqueue() vs defer(), one per transaction", figures["enqueue"]["sync"],
             "enqueue", "defer"),
            ("aenqueue() vs defer_async(), one per transaction", figures["enqueue"]["async"],
             "aenqueue", "defer_async"),
            ("drain, no-op sync tasks", figures["drain"]["sync"], "django", "procrastinate"),
            ("drain, no-op async tasks", figures["drain"]["async"], "django", "procrastinate"),
        ]  # fmt: skip
        for label, row, django, procrastinate in rows:
            write(
                f"  {label:<50}{row[django]['per_second']:>10,.1f} vs "
                f"{row[procrastinate]['per_second']:>10,.1f}   ratio {row['ratio']:.2f}"
            )
        write(
            f"  (drains with run_workers --processes {recommended['processes']} "
            f"--concurrency {recommended['concurrency']})"
        )
