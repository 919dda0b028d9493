"""The job system's own data: job results, API tokens and daily task statistics."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.db.models import Value
from django.db.models.functions import Now
from django.utils import timezone


class JobResult(models.Model):
    """The outcome of a job's last attempt, written by the worker middleware in jobs.results,
    and in `attempts_log` what every ended attempt did (the last `ATTEMPTS_LOG_LIMIT` of
    them; jobs.results says what an entry holds).

    One row per job, keyed by the job's id. procrastinate deletes jobs with SQL (retention,
    `delete_jobs`), never through the ORM, so the cascade must live in the database: the
    migration adds the foreign key constraint with ON DELETE CASCADE itself. (Django's
    `DB_CASCADE` would do the same but its system check refuses it here, because
    procrastinate's job model declares a Python-level `SET_NULL` towards its workers.)
    """

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        ABORTED = "aborted"

    job = models.OneToOneField(
        "procrastinate.ProcrastinateJob",
        on_delete=models.DO_NOTHING,
        db_constraint=False,  # added by the migration, with ON DELETE CASCADE
        primary_key=True,
        related_name="result",
    )
    task_name = models.CharField(max_length=128)
    status = models.CharField(max_length=16, choices=Status.choices)
    attempt = models.PositiveIntegerField(help_text="1 for the first run, 2 for the first retry…")
    # procrastinate's id of the worker (a row of procrastinate_workers, deleted when the
    # worker stops: no foreign key), None when unknown.
    worker_id = models.BigIntegerField(null=True, blank=True)
    worker_name = models.CharField(max_length=128, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    duration = models.DurationField(null=True, blank=True)
    return_value = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    exception_type = models.CharField(max_length=255, blank=True)
    exception_message = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    progress = models.FloatField(null=True, blank=True)
    progress_message = models.CharField(max_length=255, blank=True)
    # One entry per ended attempt, oldest first. The database default lets rows written by
    # SQL that does not name the column (the upsert before this column, seeding) exist.
    attempts_log = models.JSONField(
        default=list, db_default=Value([], output_field=models.JSONField()), blank=True
    )

    class Meta:
        permissions = [
            ("view_job_status", "Can read job status and results over the API"),
            ("defer_job", "Can defer HTTP-callable tasks over the API"),
            ("manage_job", "Can cancel, abort and retry jobs over the API"),
            # Apart from manage_job: the commands delete jobs, tokens and comments.
            ("run_command", "Can run allow-listed management commands from the admin"),
        ]

    def __str__(self) -> str:
        return f"Result of job {self.job_id}: {self.status}"


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def active(self, *, at: dt.datetime | None = None) -> ApiTokenQuerySet:
        now = at or timezone.now()
        return self.filter(revoked_at__isnull=True).exclude(expires_at__lte=now)

    def expired_before(self, cutoff: dt.datetime) -> ApiTokenQuerySet:
        """Tokens that expired or were revoked before `cutoff`: kept until then for audit."""
        return self.filter(models.Q(expires_at__lt=cutoff) | models.Q(revoked_at__lt=cutoff))


# The admin's "Now" button takes the browser's clock, which may run a little ahead.
REVOKE_CLOCK_SKEW = dt.timedelta(minutes=5)


class ApiToken(models.Model):
    """A bearer token for machine clients of the job API, limited to named tasks; a token
    may also pause and resume queues (and list them) if it was given that capability.

    Only a SHA-256 hash of the secret is stored: tokens are 32 random bytes, so a fast hash
    is enough (there is nothing to brute-force), and the clear token is shown once.
    """

    PREFIX = "pgj"

    name = models.CharField(max_length=100, unique=True)
    key_id = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    tasks = models.JSONField(default=list, help_text="Names of the tasks this token may use.")
    # Off for every token made before it existed (db_default), and for new ones unless asked:
    # a queue's pause stops every task's jobs in it, not only the token's tasks.
    may_pause_queues = models.BooleanField(
        default=False,
        db_default=False,
        help_text="May list, pause and resume queues over the API (every task's jobs in them).",
    )
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        verbose_name = "API token"

    def __str__(self) -> str:
        return self.name

    def allows(self, task_name: str) -> bool:
        return task_name in self.tasks

    def clean(self) -> None:
        """A revoked token stays revoked, at the time it was revoked; a revocation time lies
        between the token's creation and now (a time after now would read as "not yet" but
        revokes at once, and one before Christ in UTC could not be read back)."""
        stored = self.stored_revoked_at()
        if stored is not None and self.revoked_at != stored:
            raise ValidationError(
                {"revoked_at": "A revoked token stays revoked: issue a new token instead."}
            )
        if self.revoked_at is None or self.revoked_at == stored:
            return
        if isinstance(self.created_at, dt.datetime) and self.revoked_at < self.created_at:
            raise ValidationError({"revoked_at": "Cannot be before the token was created."})
        if self.revoked_at > timezone.now() + REVOKE_CLOCK_SKEW:
            raise ValidationError(
                {"revoked_at": "Cannot be in the future: a revoked token is refused at once."}
            )

    def stored_revoked_at(self) -> dt.datetime | None:
        """The revocation time in the database, whatever this instance holds now (a form
        that failed validation leaves its values on the instance)."""
        if self.pk is None:
            return None
        rows = ApiToken.objects.filter(pk=self.pk).values_list("revoked_at", flat=True)
        return rows.first()

    def revoke(self, *, at: dt.datetime) -> None:
        if self.revoked_at is not None:
            return  # revoked already, and that time stays
        self.revoked_at = at
        self.save(update_fields=["revoked_at"])


class DailyTaskStatistics(models.Model):
    """What each task did on one day (UTC), from the job results of that day.

    Computed by `jobs.compute_daily_statistics` for yesterday with `update_or_create`, so
    computing a day twice leaves the same rows.
    """

    date = models.DateField()
    task_name = models.CharField(max_length=128)
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    aborted = models.PositiveIntegerField(default=0)
    mean_duration = models.DurationField(null=True, blank=True)
    max_duration = models.DurationField(null=True, blank=True)
    computed_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "daily task statistics"
        ordering = ["-date", "task_name"]
        constraints = [
            models.UniqueConstraint(fields=["date", "task_name"], name="jobs_daily_stats_unique")
        ]

    def __str__(self) -> str:
        return f"{self.date} {self.task_name}"


def _now() -> dt.datetime:
    return timezone.now()


class ScheduleQuerySet(models.QuerySet["Schedule"]):
    def due(self, at: dt.datetime) -> ScheduleQuerySet:
        """Enabled schedules whose next run is at or before `at`, or not computed yet (rows
        written without `save()`: `bulk_create`, `update()`, a data migration's historical
        model). Both on the partial index."""
        return self.filter(
            models.Q(next_run_at__lte=at) | models.Q(next_run_at__isnull=True), enabled=True
        )


class Schedule(models.Model):
    """A recurring (or one-time) job stored in the database, edited without a deploy.

    Exactly one of `cron`, `interval` or `once_at` says when it runs. `next_run_at` is
    computed by `save()` (and by the scheduler as it runs the schedule): the scheduler's
    periodic task (jobs.tasks.run_schedules, every second) takes the enabled schedules whose
    next run has come, defers their jobs and moves their next run on, in one transaction
    holding their rows (jobs/schedules.py). Rules and checks live in jobs/schedules.py.
    """

    class Unit(models.TextChoices):
        SECONDS = "seconds"
        MINUTES = "minutes"
        HOURS = "hours"
        DAYS = "days"

    task = models.CharField(
        max_length=128,
        help_text="A registered task: procrastinate's task name, or a Django task's path.",
    )
    kwargs = models.JSONField(
        default=dict, blank=True, help_text="The task's keyword arguments, as a JSON object."
    )
    description = models.CharField(max_length=255, blank=True)
    cron = models.CharField(
        max_length=200,
        blank=True,
        help_text="5 fields (minute hour day month weekday), or 6 with the seconds last.",
    )
    interval = models.PositiveIntegerField(
        null=True, blank=True, help_text="Every this many units (of the unit below)."
    )
    interval_unit = models.CharField(max_length=7, choices=Unit.choices, default=Unit.MINUTES)
    once_at = models.DateTimeField(
        null=True, blank=True, help_text="Run a single time, at this moment; then disabled."
    )
    timezone = models.CharField(
        max_length=64, default="UTC", help_text='The cron line\'s time zone, e.g. "Europe/Paris".'
    )
    queue = models.CharField(max_length=128, blank=True, help_text="Empty: the task's own queue.")
    priority = models.IntegerField(
        null=True, blank=True, help_text="Empty: the task's own priority. Higher runs first."
    )
    enabled = models.BooleanField(default=True)
    catch_up = models.BooleanField(
        default=True,
        help_text="After an outage that missed ticks: run once to catch up (on), or wait for "
        "the next tick (off).",
    )
    start_at = models.DateTimeField(null=True, blank=True, help_text="No run before this.")
    end_at = models.DateTimeField(null=True, blank=True, help_text="No run after this.")
    next_run_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_run_at = models.DateTimeField(null=True, blank=True, editable=False)
    run_count = models.PositiveIntegerField(default=0, editable=False)
    # (Not `timezone.now`: in this class body `timezone` is the field above.)
    created_at = models.DateTimeField(default=_now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ScheduleQuerySet.as_manager()

    class Meta:
        ordering = ["task", "pk"]
        indexes = [
            # The scheduler's one query per tick, whatever the number of schedules.
            models.Index(
                fields=["next_run_at"], condition=models.Q(enabled=True), name="jobs_schedule_due"
            )
        ]
        constraints = [
            models.CheckConstraint(
                condition=(
                    (~models.Q(cron="") & models.Q(interval__isnull=True, once_at__isnull=True))
                    | (models.Q(cron="", interval__isnull=False, once_at__isnull=True))
                    | (models.Q(cron="", interval__isnull=True, once_at__isnull=False))
                ),
                name="jobs_schedule_one_kind",
                violation_error_message="Give exactly one of a cron line, an interval or a "
                "single time.",
            ),
            models.CheckConstraint(
                condition=models.Q(interval__isnull=True) | models.Q(interval__gte=1),
                name="jobs_schedule_interval_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.description or f"{self.task} ({self.pk})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        from jobs.schedules import next_run_on_save

        update_fields = kwargs.get("update_fields")
        with transaction.atomic():
            if self.pk is not None:
                # Hold the row as the scheduler does: a tick running now finishes first, and
                # none starts before this save commits. Its counts are the row's: this copy
                # may have been loaded before a tick ran.
                counted = (
                    Schedule.objects.select_for_update()
                    .filter(pk=self.pk)
                    .values("last_run_at", "run_count")
                    .first()
                )
                for name, value in (counted or {}).items():
                    if update_fields is None or name not in update_fields:
                        setattr(self, name, value)
            self.next_run_at = next_run_on_save(self)
            if update_fields is not None:
                kwargs["update_fields"] = {*update_fields, "next_run_at"}
            super().save(*args, **kwargs)

    def clean(self) -> None:
        from jobs.schedules import validate_schedule

        validate_schedule(self)


class ScheduleRun(models.Model):
    """A job a schedule deferred: at a tick (`due_at`), or by hand ("run now").

    Deleted with its job (retention, `--delete-jobs`): the migration adds the foreign key
    with ON DELETE CASCADE, as for job results. The schedule's `run_count` keeps the total.
    """

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="runs")
    job = models.OneToOneField(
        "procrastinate.ProcrastinateJob",
        on_delete=models.DO_NOTHING,
        db_constraint=False,  # added by the migration, with ON DELETE CASCADE
        related_name="schedule_run",
    )
    due_at = models.DateTimeField(help_text="The tick the job was deferred for.")
    deferred_at = models.DateTimeField()
    by_hand = models.BooleanField(default=False)
    requested_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-deferred_at", "-pk"]
        indexes = [
            models.Index(fields=["schedule", "-deferred_at"], name="jobs_schedulerun_recent")
        ]

    def __str__(self) -> str:
        return f"{self.schedule} at {self.due_at:%Y-%m-%d %H:%M:%S}"


class Batch(models.Model):
    """A batch of jobs with callbacks, or a chain of jobs run one after the other
    (jobs/workflows.py).

    The counts are kept by the database: a trigger on procrastinate's jobs (migration
    `jobs.0010`) moves a job of the batch from `pending` to its final count when it ends
    (back when it is retried by hand), in the transaction that ends it, and defers the
    callbacks when nothing is pending any more. The batch's row lock orders jobs that end
    at the same moment, so exactly one of them sees the last count and each callback is
    deferred once: its job id is kept here, and a callback with an id is never deferred
    again.
    """

    class Kind(models.TextChoices):
        BATCH = "batch"
        CHAIN = "chain"

    kind = models.CharField(max_length=5, choices=Kind.choices, default=Kind.BATCH)
    description = models.CharField(max_length=255, blank=True)
    # Given to every callback in its `batch` argument.
    properties = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(db_default=Now())
    # When the last job ended; None while jobs are pending (again, after a retry).
    finished_at = models.DateTimeField(null=True, blank=True)
    # Jobs expected: a batch's deferred jobs, a chain's steps.
    total = models.PositiveIntegerField(default=0)
    # Deferred and not ended (waiting or running).
    pending = models.PositiveIntegerField(default=0)
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    # Cancelled, aborted, or deleted before they ended.
    cancelled = models.PositiveIntegerField(default=0)
    # "on_success", "on_finish", "on_failure" -> the job to defer: queue_name, task_name,
    # priority, lock, args (jobs.workflows.JobSpec.stored).
    callbacks = models.JSONField(default=dict, blank=True)
    # A chain's steps, the same way, each with its "result_as" (or null).
    steps = models.JSONField(default=list, blank=True)
    # The chain's step deferred last (0 for the first).
    position = models.PositiveIntegerField(default=0)
    # The callbacks' jobs, once deferred (no foreign key: retention may delete them).
    on_success_job_id = models.BigIntegerField(null=True, blank=True)
    on_finish_job_id = models.BigIntegerField(null=True, blank=True)
    on_failure_job_id = models.BigIntegerField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "batches"
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["-created_at"], name="jobs_batch_recent"),
            models.Index(
                fields=["finished_at"],
                name="jobs_batch_finished",
                condition=models.Q(finished_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        label = self.description or f"{self.get_kind_display().lower()} {self.pk}"
        return f"{label} ({self.succeeded + self.failed + self.cancelled}/{self.total} ended)"


class BatchJob(models.Model):
    """A job of a batch (or a step of a chain) and how it counted when it ended.

    No foreign key to the job: the membership outlives the job's row (retention,
    `--delete-jobs`), so that a job deleted before it ended is still counted, and the
    batch still lists it.
    """

    job_id = models.BigIntegerField(primary_key=True)
    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="memberships")
    # A chain's step (0 for the first); None in a batch.
    step = models.PositiveIntegerField(null=True, blank=True)
    # "succeeded", "failed" or "cancelled" once the job ended; NULL while pending (the
    # database's trigger and partial index test for NULL, not for an empty string).
    ended_as = models.CharField(max_length=9, null=True, blank=True)  # noqa: DJ001

    class Meta:
        indexes = [
            models.Index(fields=["batch", "job_id"], name="jobs_batchjob_batch"),
            models.Index(
                fields=["batch"],
                name="jobs_batchjob_pending",
                condition=models.Q(ended_as__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"Job {self.job_id} of batch {self.batch_id}"


class PausedQueue(models.Model):
    """A queue whose jobs no worker takes until it is resumed (jobs/queue_pauses.py).

    Read by the workers' fetch (migration `jobs.0012`), so a row here holds the queue's jobs
    back from the next fetch on; deferring still works and the jobs wait.
    """

    queue_name = models.CharField(max_length=128, primary_key=True)
    paused_at = models.DateTimeField(db_default=Now())
    paused_by = models.CharField(max_length=150, blank=True)
    reason = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["queue_name"]
        permissions = [("pause_queue", "Can pause and resume queues")]

    def __str__(self) -> str:
        return f"{self.queue_name} (paused)"


class QueueControl(PausedQueue):
    """The admin's page of queues, limits and pauses (jobs/admin/queues.py).

    A proxy, with no table and no permission of its own: it only gives the page its entry in
    the admin's index. Viewing the page needs the permission to view jobs, pausing
    `jobs.pause_queue`.
    """

    class Meta:
        proxy = True
        default_permissions = ()
        verbose_name = "queues, limits and pauses"
        verbose_name_plural = "queues, limits and pauses"
