"""Indexes that keep the admin, the dashboard and the metrics fast on millions of jobs.

They go on procrastinate's tables, built with CREATE INDEX CONCURRENTLY so that adding
them to a live queue never blocks deferring or fetching jobs (hence `atomic = False`).
Django's `AddIndexConcurrently` cannot do it (it skips unmanaged models such as
procrastinate's): see `jobs/migration_operations.py`.

What each index serves:

- jobs_job_status_id, jobs_job_queue_id, jobs_job_task_id: the job list filtered by status,
  queue or task, newest first (an index scan that stops after one page), capped counts,
  and the waiting jobs per queue on the dashboard (status = 'todo').
- jobs_job_lock, jobs_job_queueing_lock: search by lock or queueing lock, exact or prefix
  (text_pattern_ops makes LIKE 'abc%' use the index whatever the database's collation).
- jobs_event_type_at: everything that reads events by time: throughput per minute, waiting
  and run time samples, the event list by type, and the date filters (mapped to job ids).

The extended statistics `jobs_job_queue_status` let PostgreSQL's ANALYZE keep the most
common (queue, status) pairs with their frequencies: the dashboard and the metrics read
them to estimate the number of finished jobs per queue without counting millions of rows.
"""

from __future__ import annotations

from django.db import migrations

from jobs.migration_operations import CreateIndexConcurrently


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("jobs", "0003_comments_statistics_token_expiry"),
        ("procrastinate", "0041_post_retry_failed_job"),
    ]

    operations = [
        CreateIndexConcurrently("jobs_job_status_id", "procrastinate_jobs (status, id)"),
        CreateIndexConcurrently("jobs_job_queue_id", "procrastinate_jobs (queue_name, id)"),
        CreateIndexConcurrently("jobs_job_task_id", "procrastinate_jobs (task_name, id)"),
        CreateIndexConcurrently(
            "jobs_job_lock",
            "procrastinate_jobs (lock text_pattern_ops) WHERE lock IS NOT NULL",
        ),
        CreateIndexConcurrently(
            "jobs_job_queueing_lock",
            "procrastinate_jobs (queueing_lock text_pattern_ops) WHERE queueing_lock IS NOT NULL",
        ),
        CreateIndexConcurrently("jobs_event_type_at", "procrastinate_events (type, at)"),
        # A catalog change only (no table scan, no lock that blocks reads or writes); the
        # statistics are filled by the next ANALYZE, which autovacuum runs.
        migrations.RunSQL(
            sql="CREATE STATISTICS IF NOT EXISTS jobs_job_queue_status (mcv) "
            "ON queue_name, status FROM procrastinate_jobs",
            reverse_sql="DROP STATISTICS IF EXISTS jobs_job_queue_status",
        ),
    ]
