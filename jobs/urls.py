from django.urls import path, register_converter

from jobs import dashboard, health, metrics
from jobs.api import queues as queue_api
from jobs.api import views as api

app_name = "jobs"


class QueueNameConverter:
    """Any text, "/" and line breaks included (Django's `path` stops at a line break): the
    view checks the name and answers a bad one with the API's JSON 400, not an HTML 404."""

    regex = r"[\s\S]+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(QueueNameConverter, "jobs_queue_name")


urlpatterns = [
    # Inspecting the queue: staff dashboard, health for load balancers, Prometheus metrics.
    path("dashboard/", dashboard.dashboard, name="dashboard"),
    path("dashboard/panels/", dashboard.dashboard_panels, name="dashboard-panels"),
    path("dashboard/data/", dashboard.dashboard_data, name="dashboard-data"),
    path("health/", health.health, name="health"),
    path("metrics/", metrics.metrics, name="metrics"),
    # The JSON job API (jobs/api/views.py), sync implementation...
    path("api/jobs/", api.defer_job, name="api-defer"),
    path("api/jobs/<int:job_id>/", api.job_detail, name="api-job"),
    path("api/jobs/<int:job_id>/cancel/", api.job_action, {"action": "cancel"}, name="api-cancel"),
    path("api/jobs/<int:job_id>/abort/", api.job_action, {"action": "abort"}, name="api-abort"),
    path("api/jobs/<int:job_id>/retry/", api.job_action, {"action": "retry"}, name="api-retry"),
    path("api/tasks/", api.task_list, name="api-tasks"),
    path("api/batches/", api.defer_batch, name="api-defer-batch"),
    path("api/batches/<int:batch_id>/", api.batch_detail, name="api-batch"),
    path(
        "api/batches/<int:batch_id>/cancel/",
        api.batch_action,
        {"action": "cancel"},
        name="api-batch-cancel",
    ),
    path(
        "api/batches/<int:batch_id>/retry/",
        api.batch_action,
        {"action": "retry"},
        name="api-batch-retry",
    ),
    path("api/queues/", queue_api.queue_list, name="api-queues"),
    path(
        "api/queues/<jobs_queue_name:queue>/pause/",
        queue_api.queue_action,
        {"action": "pause"},
        name="api-queue-pause",
    ),
    path(
        "api/queues/<jobs_queue_name:queue>/resume/",
        queue_api.queue_action,
        {"action": "resume"},
        name="api-queue-resume",
    ),
    # ...and the same routes served by async views.
    path("api/async/jobs/", api.adefer_job, name="api-async-defer"),
    path("api/async/jobs/<int:job_id>/", api.ajob_detail, name="api-async-job"),
    path(
        "api/async/jobs/<int:job_id>/cancel/",
        api.ajob_action,
        {"action": "cancel"},
        name="api-async-cancel",
    ),
    path(
        "api/async/jobs/<int:job_id>/abort/",
        api.ajob_action,
        {"action": "abort"},
        name="api-async-abort",
    ),
    path(
        "api/async/jobs/<int:job_id>/retry/",
        api.ajob_action,
        {"action": "retry"},
        name="api-async-retry",
    ),
    path("api/async/tasks/", api.atask_list, name="api-async-tasks"),
    path("api/async/batches/", api.adefer_batch, name="api-async-defer-batch"),
    path("api/async/batches/<int:batch_id>/", api.abatch_detail, name="api-async-batch"),
    path(
        "api/async/batches/<int:batch_id>/cancel/",
        api.abatch_action,
        {"action": "cancel"},
        name="api-async-batch-cancel",
    ),
    path(
        "api/async/batches/<int:batch_id>/retry/",
        api.abatch_action,
        {"action": "retry"},
        name="api-async-batch-retry",
    ),
    path("api/async/queues/", queue_api.aqueue_list, name="api-async-queues"),
    path(
        "api/async/queues/<jobs_queue_name:queue>/pause/",
        queue_api.aqueue_action,
        {"action": "pause"},
        name="api-async-queue-pause",
    ),
    path(
        "api/async/queues/<jobs_queue_name:queue>/resume/",
        queue_api.aqueue_action,
        {"action": "resume"},
        name="api-async-queue-resume",
    ),
]
