"""A partial index on failed results, for the recent failures of the dashboard and metrics.

Small (failed attempts only) and covering: grouping the failures of the last hours by task
and exception reads the index alone. Built concurrently like 0004's. It is not part of
`JobResult`'s model state: no ORM query uses it, only the SQL of `jobs/queue_stats.py`.
"""

from __future__ import annotations

from django.db import migrations

from jobs.migration_operations import CreateIndexConcurrently


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("jobs", "0004_admin_indexes")]

    operations = [
        CreateIndexConcurrently(
            "jobs_result_failed_at",
            "jobs_jobresult (finished_at) INCLUDE (task_name, exception_type, job_id) "
            "WHERE status = 'failed'",
        ),
    ]
