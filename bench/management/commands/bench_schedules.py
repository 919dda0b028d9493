"""`manage.py bench_schedules`: do 10,000 stored schedules tick on time?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from bench import schedule_lag
from bench.scratch import measure_in_scratch_database, require_scratch_database
from jobs.management.arguments import whole_number


class Command(BaseCommand):
    help = (
        "Benchmark the stored schedules on a scratch database next to yours: N schedules due "
        "on the same second, ticked by real workers for a few rounds; the lag from each due "
        "time to its job's deferred event, and each scheduler tick's duration."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--schedules", type=whole_number(1), default=10_000)
        parser.add_argument("--rounds", type=whole_number(1, 99), default=3)
        parser.add_argument(
            "--every",
            type=whole_number(5, 3600),
            default=30,
            help="Seconds between rounds (longer than a round's ticks take).",
        )
        parser.add_argument(
            "--workers", type=whole_number(1, 16), default=2, help="Worker processes."
        )
        parser.add_argument(
            "--output",
            type=Path,
            default=Path(settings.BASE_DIR) / "artifacts" / "bench_schedules" / "figures.json",
        )
        parser.add_argument("--keep", action="store_true", help="Keep the scratch database.")
        # Internal: the measuring child process, whose default database is the scratch one.
        parser.add_argument("--measure-into", type=Path, help="(internal)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["measure_into"]:
            self._measure(options)
            return
        figures = measure_in_scratch_database(
            "bench_schedules", self._forwarded(options), keep=options["keep"], log=self.stdout.write
        )
        output: Path = options["output"]
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(figures, indent=2))
        self._report(figures)
        self.stdout.write(f"Figures: {output}")
        if problems := schedule_lag.check(figures):
            raise CommandError("; ".join(problems))

    def _forwarded(self, options: dict[str, Any]) -> list[str]:
        """The options of this run, for the measuring process."""
        return [
            "--schedules", str(options["schedules"]), "--rounds", str(options["rounds"]),
            "--every", str(options["every"]), "--workers", str(options["workers"]),
        ]  # fmt: skip

    def _measure(self, options: dict[str, Any]) -> None:
        require_scratch_database("bench_schedules")

        def log(line: str) -> None:
            self.stdout.write(line)
            self.stdout.flush()

        figures = schedule_lag.run(
            schedules=options["schedules"],
            rounds=options["rounds"],
            every=options["every"],
            workers=options["workers"],
            log=log,
        )
        options["measure_into"].write_text(json.dumps(figures))

    def _report(self, figures: dict[str, Any]) -> None:
        write = self.stdout.write

        def latency(row: dict[str, float]) -> str:
            return (
                f"median {row['median_ms']:,.0f} ms, p95 {row['p95_ms']:,.0f} ms, "
                f"p99 {row['p99_ms']:,.0f} ms, max {row['max_ms']:,.0f} ms"
            )

        write("")
        write(
            f"{figures['schedules']:,} schedules due on the same second, {figures['rounds']} "
            f"rounds {figures['every_seconds']} s apart, {figures['workers']} worker "
            f"process(es) on the maintenance queue, {figures['cpu_count']} CPU cores"
        )
        if figures["lag"]:
            write(
                f"Due time -> deferred event, all {figures['runs']:,} runs: "
                f"{latency(figures['lag'])}"
            )
        for number, row in enumerate(figures["per_round"], start=1):
            committed = row["committed_ms"]
            write(
                f"Round {number} (due {row['due_at']}, {row['runs']:,} runs): {latency(row['lag'])}"
                + (f"; all committed {committed:,.0f} ms after the due time" if committed else "")
            )
            for tick in row["ticks"]:
                write(
                    f"  scheduler tick on {tick['worker']}: started {tick['started_ms']:,.0f} ms "
                    f"after the due time, took {tick['duration_ms']:,.0f} ms, deferred "
                    f"{tick['deferred']:,} jobs"
                )
        write(
            f"Runs: {figures['runs']:,} of {figures['runs_expected']:,}; ticks deferred twice: "
            f"{figures['ticks_deferred_twice']:,}"
        )
