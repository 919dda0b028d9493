"""The queue's dashboard for staff: one page that refreshes itself, and its data as JSON.

`take_snapshot` gathers every figure (jobs/queue_stats.py says what each costs); the page
draws them with server-side SVG (jobs/charts.py). The page fetches `panels/` every
JOBS_DASHBOARD_REFRESH_SECONDS and swaps it in; `data/` serves the same snapshot as JSON
for scripts. All three need a staff user who may view procrastinate's jobs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from jobs import charts, periodic, queue_overview, queue_stats
from jobs.access import staff_who_may_view_jobs
from jobs.conf import jobs_settings
from jobs.job_statuses import FINISHED_STATUSES

# Percentiles are computed over the most recent jobs of the window, at most this many.
TIMING_SAMPLE = 1000


@dataclasses.dataclass(frozen=True)
class Snapshot:
    now: dt.datetime
    hours: int
    queues: list[queue_stats.QueueState]
    finished: dict[str, int]  # jobs finished in the window, per final status
    throughput: queue_stats.Throughput
    waiting_times: list[queue_stats.Percentiles]
    run_times: list[queue_stats.Percentiles]
    workers: list[queue_stats.WorkerState]
    failures: list[queue_stats.FailureGroup]
    periodic: list[periodic.PeriodicTaskInfo]
    paused: dict[str, queue_overview.Pause]  # queue -> its pause, for every paused queue

    @property
    def live_workers(self) -> int:
        return sum(1 for worker in self.workers if worker.live)

    @property
    def waiting(self) -> int:
        return sum(queue.waiting for queue in self.queues)

    @property
    def running(self) -> int:
        return sum(queue.counts.get("doing", 0) for queue in self.queues)

    @property
    def counts_exact(self) -> bool:
        return all("todo" in queue.exact for queue in self.queues)

    @property
    def oldest_waiting(self) -> queue_stats.QueueState | None:
        waiting = [q for q in self.queues if q.oldest_age_seconds is not None]
        return max(waiting, key=lambda q: q.oldest_age_seconds or 0, default=None)


def take_snapshot(*, hours: int, live_within: float) -> Snapshot:
    seconds = hours * 3600
    now = queue_stats.database_now()
    throughput = queue_stats.throughput(hours=hours, now=now)
    # Succeeded and failed are the chart's sums; the rarer final states are counted.
    finished = {"succeeded": sum(throughput.succeeded), "failed": sum(throughput.failed)}
    rarer = [status for status in FINISHED_STATUSES if status not in finished]
    finished |= queue_stats.finished_counts(seconds=seconds, statuses=rarer)
    return Snapshot(
        now=now,
        hours=hours,
        queues=queue_stats.queue_states(),
        finished=finished,
        throughput=throughput,
        waiting_times=queue_stats.percentiles(
            queue_stats.waiting_times(seconds=seconds, sample=TIMING_SAMPLE)
        ),
        run_times=queue_stats.percentiles(
            queue_stats.run_times(seconds=seconds, sample=TIMING_SAMPLE)
        ),
        workers=queue_stats.workers(live_within=live_within),
        failures=queue_stats.recent_failures(seconds=seconds),
        periodic=periodic.periodic_overview(now=now),
        paused=queue_overview.pauses(),
    )


def _current_snapshot() -> Snapshot:
    return take_snapshot(
        hours=jobs_settings.JOBS_DASHBOARD_HOURS,
        live_within=jobs_settings.JOBS_STALLED_WORKER_SECONDS,
    )


def snapshot_data(snapshot: Snapshot) -> dict[str, Any]:
    """The snapshot as JSON-safe data (datetimes in ISO 8601)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
            if isinstance(value, queue_stats.QueueState):
                fields["exact"] = sorted(value.exact)
                fields["waiting"] = value.waiting
            return fields
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set):
            return [plain(v) for v in value]
        if isinstance(value, dt.datetime):
            return value.isoformat()
        return value

    data: dict[str, Any] = plain(snapshot)
    data["throughput"]["times"] = [t.isoformat() for t in snapshot.throughput.times()]
    data["live_workers"] = snapshot.live_workers
    return data


def _panels_context(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "snapshot": snapshot,
        "throughput_chart": charts.throughput_chart(snapshot.throughput),
        "queue_chart": charts.queue_chart(snapshot.queues),
        "waiting_chart": charts.percentile_chart(
            "waiting",
            snapshot.waiting_times,
            caption="Waiting time, from due to started: median to 99th percentile",
        ),
        "running_chart": charts.percentile_chart(
            "running",
            snapshot.run_times,
            caption="Run time, from started to ended: median to 99th percentile",
        ),
        "legend_throughput": charts.legend(
            [("succeeded", charts.SUCCEEDED), ("failed", charts.FAILED)]
        ),
        "legend_queues": charts.legend(
            [
                ("waiting", charts.WAITING),
                ("scheduled for later", charts.SCHEDULED),
                ("running", charts.RUNNING),
            ]
        ),
        "timing_sample": TIMING_SAMPLE,
    }


@require_GET
@never_cache
@staff_who_may_view_jobs
def dashboard(request: HttpRequest) -> HttpResponse:
    context = _panels_context(_current_snapshot())
    context["refresh_seconds"] = jobs_settings.JOBS_DASHBOARD_REFRESH_SECONDS
    return render(request, "jobs/dashboard.html", context)


@require_GET
@never_cache
@staff_who_may_view_jobs
def dashboard_panels(request: HttpRequest) -> HttpResponse:
    return render(request, "jobs/dashboard_panels.html", _panels_context(_current_snapshot()))


@require_GET
@never_cache
@staff_who_may_view_jobs
def dashboard_data(request: HttpRequest) -> HttpResponse:
    return JsonResponse(snapshot_data(_current_snapshot()))
