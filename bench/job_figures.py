"""Every measurement of `manage.py bench_jobs`, in order, as one dict of figures (the
measuring process's default database is the benchmark's scratch database)."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import Any

from bench import worker_tasks
from bench.celery_drain import celery_beside
from bench.defer_cost import defer_rates, enqueue_rates, view_overhead
from bench.scaling import scaling_figures
from bench.timing import alternating_rounds, with_ratio
from bench.workers import drain, held_back_cpu, pickup_latency, run_workers, soak, stock_worker


def run_all(options: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """Run each measurement with `options` (bench_jobs' parsed options), logging progress."""
    figures: dict[str, Any] = {"cpu_count": os.cpu_count()}
    log("Defer rate...")
    figures["defer_per_second"] = defer_rates(options["defer_count"])
    processes, concurrency = options["processes"], options["concurrency"]
    recommended = run_workers(processes, concurrency)
    figures["recommended"] = {"processes": processes, "concurrency": concurrency}
    figures["drain"] = {}
    setups = (("stock", stock_worker()), ("recommended", recommended))
    rounds, jobs = options["repeat"], options["jobs"]
    # Celery + Redis in the same rounds as this project's setups (bench.celery_drain).
    with celery_beside(options["kinds"], options["celery_concurrency"]) as celery:
        for kind in options["kinds"]:

            def announce(label: str, number: int, kind: str = kind) -> None:
                log(f"Drain {jobs:,} {kind} jobs with the {label} setup ({number}/{rounds})...")

            drains = alternating_rounds(
                rounds,
                [
                    *((label, partial(drain, command, kind, jobs)) for label, command in setups),
                    *celery.measures(kind, jobs),
                ],
                announce,
            )
            for label, row in drains.items():
                figures["drain"][f"{kind}/{label}"] = row
    figures["celery"] = celery.figures(figures["drain"])
    log("Django's task API beside procrastinate's...")
    figures["django_tasks"] = django_task_figures(options, recommended, log)
    log("Batches beside plain jobs...")
    figures["batches"] = batch_figures(options, recommended, log)
    log("Limits: the app's fetch beside procrastinate's, a limited drain, held-back CPU...")
    figures["limits"] = limits_figures(options, recommended, log)
    log("Pickup latency with LISTEN/NOTIFY...")
    figures["pickup_listen_notify"] = pickup_latency(
        recommended, options["latency_count"], listeners=processes
    ).__dict__
    poll = options["poll_interval"]
    log(f"Pickup latency with polling only (every {poll} s)...")
    polling = run_workers(
        processes, concurrency, "--no-listen-notify", "--fetch-job-polling-interval", str(poll)
    )
    figures["pickup_polling"] = pickup_latency(
        polling, options["polling_latency_count"], listeners=0
    ).__dict__
    figures["pickup_polling"]["interval_seconds"] = poll
    figures.update(scaling_figures(options, recommended, log))
    log("View overhead under uvicorn...")
    figures["view_overhead"] = view_overhead(options["requests"])
    if options["soak"]:
        log(f"Soak: {options['soak']:,} jobs, finished jobs deleted...")
        figures["soak"] = soak(
            run_workers(processes, concurrency, "--delete-jobs", "successful"), options["soak"], log
        )
    return figures


def django_task_figures(
    options: dict[str, Any], workers: list[str], log: Callable[[str], None]
) -> dict[str, Any]:
    """Django's task API (jobs.django_tasks) beside procrastinate's own, in alternating
    rounds: the enqueue rate, one job per transaction as a view defers it, and the drain
    throughput of no-op tasks with `workers` (the recommended setup). Each pair has its
    `ratio`, Django's rate over procrastinate's."""
    rounds, jobs = options["repeat"], options["jobs"]
    figures: dict[str, Any] = {"enqueue": enqueue_rates(options["defer_count"], rounds)}
    figures["drain"] = {}
    for flavour in ("sync", "async"):

        def announce(label: str, number: int, flavour: str = flavour) -> None:
            log(f"Drain {jobs:,} {label} no-op {flavour} jobs ({number}/{rounds})...")

        pair = alternating_rounds(
            rounds,
            [
                ("procrastinate", partial(drain, workers, f"noop_{flavour}", jobs)),
                ("django", partial(drain, workers, f"django_noop_{flavour}", jobs)),
            ],
            announce,
        )
        figures["drain"][flavour] = with_ratio(pair, "django", "procrastinate")
    return figures


def batch_figures(
    options: dict[str, Any], workers: list[str], log: Callable[[str], None]
) -> dict[str, Any]:
    """Batches (jobs.workflows) beside plain jobs: the drain of `--batch-jobs` no-op jobs
    deferred as one batch with a callback and of as many plain ones, in alternating rounds
    with `workers` (the recommended setup); `ratio` is the batch's rate over the plain one.
    With `--big-batch N`, one more drain of a single batch of N jobs, whose callback must
    run once."""
    rounds, jobs = options["repeat"], options["batch_jobs"]
    figures: dict[str, Any] = {}
    for flavour in ("sync", "async"):

        def announce(label: str, number: int, flavour: str = flavour) -> None:
            log(f"Drain {jobs:,} {label} no-op {flavour} jobs ({number}/{rounds})...")

        pair = alternating_rounds(
            rounds,
            [
                ("plain", partial(drain, workers, f"noop_{flavour}", jobs)),
                ("batched", partial(drain, workers, f"noop_{flavour}", jobs, batched=True)),
            ],
            announce,
        )
        figures[flavour] = with_ratio(pair, "batched", "plain")
    if options["big_batch"]:
        big = options["big_batch"]
        log(f"Drain one batch of {big:,} no-op sync jobs...")
        figures["big_batch"] = drain(workers, "noop_sync", big, timeout=3600, batched=True)
    return figures


def limits_figures(
    options: dict[str, Any], workers: list[str], log: Callable[[str], None]
) -> dict[str, Any]:
    """What limits (jobs.limits) cost and do, with `workers` (the recommended setup):

    - `unlimited`: the drain of no-op async jobs with the app's fetch (paused queues and
      limits; the bench tasks declare limits, so it takes its limited path) and with
      procrastinate's own (JOBS_FETCH_WITH_LIMITS=0), in alternating rounds; `ratio` is
      the app's rate over procrastinate's;
    - `limited`: the drain of no-op async jobs limited to LIMITED_CONCURRENCY at once per
      key, over LIMITED_KEYS keys;
    - `held_cpu`: the CPU of the workers, idle and then with only held-back jobs queued.
    """
    rounds, jobs = options["repeat"], options["jobs"]

    def announce(label: str, number: int) -> None:
        log(f"Drain {jobs:,} no-op async jobs, {label} ({number}/{rounds})...")

    pair = alternating_rounds(
        rounds,
        [
            (
                "procrastinate_fetch",
                partial(drain, workers, "noop_async", jobs, env={"JOBS_FETCH_WITH_LIMITS": "0"}),
            ),
            ("app_fetch", partial(drain, workers, "noop_async", jobs)),
        ],
        announce,
    )
    figures: dict[str, Any] = {"unlimited": with_ratio(pair, "app_fetch", "procrastinate_fetch")}
    log(
        f"Drain {jobs:,} no-op async jobs, {worker_tasks.LIMITED_CONCURRENCY} at once per key "
        f"over {worker_tasks.LIMITED_KEYS} keys..."
    )
    figures["limited"] = {
        **drain(workers, "noop_limited", jobs),
        "concurrency": worker_tasks.LIMITED_CONCURRENCY,
        "keys": worker_tasks.LIMITED_KEYS,
    }
    seconds, held = options["idle_seconds"], options["held_jobs"]
    log(f"CPU of idle workers, then of workers with only {held:,} held-back jobs ({seconds} s)...")
    figures["held_cpu"] = held_back_cpu(
        workers, seconds=seconds, held=held, listeners=options["processes"]
    )
    return figures
