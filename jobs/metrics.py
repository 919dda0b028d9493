"""Prometheus metrics of the queue: `GET /metrics/`.

A custom collector queries the database at scrape time, with the same bounded queries as
the dashboard (jobs/queue_stats.py), so every web process answers alike and nothing is kept
between scrapes. Metrics (all gauges, as they describe the queue now or a recent window):

- `pgjobs_jobs{queue,status}`: waiting (`todo`, scheduled ones included) and running
  (`doing`) jobs, counted; `pgjobs_jobs_scheduled{queue}`: of the waiting, those scheduled
  for later; `pgjobs_jobs_estimated{queue,status}`: every status, estimated from
  PostgreSQL's statistics (finished jobs are millions: they are never counted);
- `pgjobs_oldest_waiting_seconds{queue}`: how long the oldest job due has been waiting;
- `pgjobs_job_waiting_seconds{queue}` and `pgjobs_job_duration_seconds{queue}`: histograms
  of waiting and run times of the jobs started or ended in the last
  JOBS_METRICS_WINDOW_SECONDS (at most `SAMPLE` of them). They are *gauge* histograms, of
  a sliding window, not counters: use `histogram_quantile(0.95, sum by (le)
  (pgjobs_job_duration_seconds_bucket))` without `rate()`;
- `pgjobs_finished_jobs{status}`: jobs finished in the window, per final status;
- `pgjobs_failed_attempts{task,exception}`: attempts that failed in the window;
- `pgjobs_workers{state}`: workers whose heartbeat is fresh (`live`) or not (`stale`);
- `pgjobs_schedules{state}`: stored schedules (jobs/schedules.py) `enabled`, `disabled`, or
  `broken` (enabled, their task missing from the code: nothing is deferred for them), each
  schedule in one state; `pgjobs_schedules_overdue_seconds`: how long the most overdue
  enabled schedule has waited past its next run (a second or two when the scheduler keeps
  up; it grows while no worker serves the `maintenance` queue);
- `pgjobs_queue_paused{queue}`: 1 for each paused queue (jobs/queue_pauses.py); a queue
  that is not paused has no sample;
- `pgjobs_database_up`: 0 when the database could not be read (then nothing else).

Access: `Authorization: Bearer <JOBS_METRICS_TOKEN>` (Prometheus's `authorization`
setting), or a logged-in staff user who may view jobs. With no token configured, only the
latter. Keep the token secret like a password; or serve /metrics/ only on a private
network, from a web process that the public load balancer does not route it to.
"""

from __future__ import annotations

import hmac
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator

from django.db import Error, connection, transaction
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from jobs import queue_pauses, queue_stats, schedules
from jobs.access import MalformedAuthorization, bearer_token, may_view_jobs
from jobs.conf import jobs_settings

BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
# The histograms describe at most this many of the most recent jobs of the window.
SAMPLE = 20_000
STATEMENT_TIMEOUT_MS = 5000


def _histogram(
    name: str, documentation: str, samples: Iterable[tuple[str, float]]
) -> GaugeHistogramMetricFamily:
    by_queue: dict[str, list[float]] = defaultdict(list)
    for queue, value in samples:
        by_queue[queue].append(value)
    family = GaugeHistogramMetricFamily(name, documentation, labels=["queue"])
    for queue, values in sorted(by_queue.items()):
        buckets = [(str(bound), sum(1 for v in values if v <= bound)) for bound in BUCKETS]
        buckets.append(("+Inf", len(values)))
        family.add_metric([queue], buckets, math.fsum(values))
    return family


class QueueCollector(Collector):
    """Reads the queue's figures at each scrape (see the module's docstring)."""

    def __init__(self, *, window_seconds: float, live_within: float) -> None:
        self.window_seconds = window_seconds
        self.live_within = live_within

    def collect(self) -> Iterator[Metric]:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
                metrics = list(self._metrics())
        except Error:
            metrics = []
        yield GaugeMetricFamily(
            "pgjobs_database_up",
            "1 if the queue's figures could be read from the database, else 0.",
            value=1 if metrics else 0,
        )
        yield from metrics

    def _metrics(self) -> Iterator[Metric]:
        window = self.window_seconds
        states = queue_stats.queue_states()
        jobs = GaugeMetricFamily(
            "pgjobs_jobs", "Jobs waiting (todo) and running (doing).", labels=["queue", "status"]
        )
        estimated = GaugeMetricFamily(
            "pgjobs_jobs_estimated",
            "Jobs per status, estimated from PostgreSQL's statistics.",
            labels=["queue", "status"],
        )
        scheduled = GaugeMetricFamily(
            "pgjobs_jobs_scheduled", "Waiting jobs scheduled for later.", labels=["queue"]
        )
        oldest = GaugeMetricFamily(
            "pgjobs_oldest_waiting_seconds",
            "Age of the oldest job due and not started (0 if none).",
            labels=["queue"],
        )
        for state in states:
            for status, count in sorted(state.counts.items()):
                if status in state.exact:
                    jobs.add_metric([state.queue, status], count)
                estimated.add_metric([state.queue, status], count)
            if "todo" in state.exact:
                scheduled.add_metric([state.queue], state.scheduled)
            oldest.add_metric([state.queue], state.oldest_age_seconds or 0.0)
        yield from (jobs, estimated, scheduled, oldest)

        yield _histogram(
            "pgjobs_job_waiting_seconds",
            f"From due to started, jobs started in the last {window:.0f} s.",
            queue_stats.waiting_times(seconds=window, sample=SAMPLE),
        )
        yield _histogram(
            "pgjobs_job_duration_seconds",
            f"From started to ended, attempts ended in the last {window:.0f} s.",
            queue_stats.run_times(seconds=window, sample=SAMPLE),
        )

        finished = GaugeMetricFamily(
            "pgjobs_finished_jobs",
            f"Jobs that reached a final status in the last {window:.0f} s.",
            labels=["status"],
        )
        for status, count in sorted(queue_stats.finished_counts(seconds=window).items()):
            finished.add_metric([status], count)
        yield finished

        failures = GaugeMetricFamily(
            "pgjobs_failed_attempts",
            f"Attempts that failed in the last {window:.0f} s.",
            labels=["task", "exception"],
        )
        for group in queue_stats.recent_failures(seconds=window, groups=1000, jobs_per_group=1):
            failures.add_metric([group.task_name, group.exception_type], group.count)
        yield failures

        workers = GaugeMetricFamily(
            "pgjobs_workers", "Workers by the freshness of their heartbeat.", labels=["state"]
        )
        states_of_workers = queue_stats.workers(live_within=self.live_within, limit=10_000)
        live = sum(1 for worker in states_of_workers if worker.live)
        workers.add_metric(["live"], live)
        workers.add_metric(["stale"], len(states_of_workers) - live)
        yield workers

        counts = schedules.schedule_counts()
        stored = GaugeMetricFamily(
            "pgjobs_schedules",
            "Stored schedules: enabled, disabled, or broken (enabled, task missing from the code).",
            labels=["state"],
        )
        stored.add_metric(["enabled"], counts.enabled)
        stored.add_metric(["disabled"], counts.disabled)
        stored.add_metric(["broken"], counts.broken)
        yield stored
        yield GaugeMetricFamily(
            "pgjobs_schedules_overdue_seconds",
            "How long the most overdue enabled schedule has waited past its next run (0 if none).",
            value=schedules.overdue_seconds(),
        )

        paused = GaugeMetricFamily(
            "pgjobs_queue_paused",
            "1 for each paused queue: workers take none of its jobs until it is resumed.",
            labels=["queue"],
        )
        for pause in queue_pauses.paused_queues():
            paused.add_metric([pause.queue_name], 1)
        yield paused


def is_allowed(request: HttpRequest) -> bool:
    expected = jobs_settings.JOBS_METRICS_TOKEN
    try:
        presented = bearer_token(request)
    except MalformedAuthorization:
        presented = None  # another scheme (a proxy's Basic): the session may still do
    if expected and presented is not None:
        return hmac.compare_digest(presented.encode(), expected.encode())
    return may_view_jobs(request.user)


@require_GET
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    if not is_allowed(request):
        if request.user.is_authenticated:
            return HttpResponse("Forbidden.\n", status=403, content_type="text/plain")
        return HttpResponse(
            "A bearer token (JOBS_METRICS_TOKEN) or a staff login is required.\n",
            status=401,
            content_type="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    # A registry per request: nothing global to register twice, settings read each time.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        QueueCollector(
            window_seconds=float(jobs_settings.JOBS_METRICS_WINDOW_SECONDS),
            live_within=float(jobs_settings.JOBS_STALLED_WORKER_SECONDS),
        )
    )
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(registry), content_type=content_type)
