"""Admin for the project's models, and procrastinate's job admin with results added.

procrastinate's own admin (registered by its Django app) shows job and event rows
read-only; its actions go through procrastinate's job manager. The job page here also
shows the job's result (jobs.results).
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from procrastinate.contrib.django.admin import ProcrastinateJobAdmin
from procrastinate.contrib.django.models import ProcrastinateJob

from jobs.models import ApiToken, JobResult, Notification, Report
from jobs.tokens import TokenError, validate_task_names


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["id", "recipient", "subject", "created_at", "sent_at", "job_id"]
    list_filter = ["sent_at"]
    search_fields = ["recipient", "subject"]
    ordering = ["-created_at"]
    readonly_fields = ["created_at", "sent_at", "job_id"]


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "status", "requested_at", "generated_at", "job_id"]
    list_filter = ["status"]
    search_fields = ["title"]
    ordering = ["-requested_at"]
    readonly_fields = ["requested_at", "generated_at", "job_id", "status"]


class ApiTokenForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ["tasks", "revoked_at"]

    def clean_tasks(self) -> list[str]:
        tasks = self.cleaned_data["tasks"]
        if not isinstance(tasks, list) or not all(isinstance(name, str) for name in tasks):
            raise forms.ValidationError('A JSON list of task names, e.g. ["jobs.build_report"].')
        try:
            return validate_task_names(tasks)
        except TokenError as exc:
            raise forms.ValidationError(str(exc)) from exc


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are created with `manage.py create_api_token` (the clear token is shown once
    there); here they are listed, limited to other tasks, or revoked."""

    form = ApiTokenForm
    list_display = ["name", "key_id", "tasks", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "key_id"]
    ordering = ["name"]
    readonly_fields = ["name", "key_id", "created_at", "last_used_at"]
    fields = ["name", "key_id", "tasks", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        now = timezone.now()
        tokens = list(ApiToken.objects.active().filter(pk__in=queryset))
        for token in tokens:
            token.revoke(at=now)
        self.message_user(request, f"Revoked {len(tokens)} token(s).", messages.SUCCESS)


admin.site.unregister(ProcrastinateJob)


@admin.register(ProcrastinateJob)
class JobAdmin(ProcrastinateJobAdmin):
    """procrastinate's job admin, with the job's result on its page."""

    fields = [
        *ProcrastinateJobAdmin.fields,
        "result_status",
        "result_timing",
        "result_progress",
        "result_value",
        "result_error",
    ]

    def get_readonly_fields(
        self, request: HttpRequest, obj: ProcrastinateJob | None = None
    ) -> list[str]:
        return [
            *super().get_readonly_fields(request, obj),
            *self.fields[len(ProcrastinateJobAdmin.fields) :],
        ]

    @staticmethod
    def _result(job: ProcrastinateJob) -> JobResult | None:
        # Five fields show the same row: read it once per page.
        if not hasattr(job, "_jobs_result"):
            job._jobs_result = JobResult.objects.filter(job_id=job.pk).first()  # type: ignore[attr-defined]
        return job._jobs_result  # type: ignore[attr-defined]

    @admin.display(description="Last attempt")
    def result_status(self, job: ProcrastinateJob) -> str:
        result = self._result(job)
        if result is None:
            return "not run yet"
        return f"{result.status} (attempt {result.attempt}, worker {result.worker_name or '?'})"

    @admin.display(description="Timing")
    def result_timing(self, job: ProcrastinateJob) -> str:
        result = self._result(job)
        if result is None:
            return "-"
        ended = result.finished_at.isoformat() if result.finished_at else "running"
        seconds = f", {result.duration.total_seconds():.3f} s" if result.duration else ""
        return f"started {result.started_at.isoformat()}, finished {ended}{seconds}"

    @admin.display(description="Progress")
    def result_progress(self, job: ProcrastinateJob) -> str:
        result = self._result(job)
        if result is None or result.progress is None:
            return "-"
        return f"{result.progress:.0%} {result.progress_message}".strip()

    @admin.display(description="Return value")
    def result_value(self, job: ProcrastinateJob) -> str:
        result = self._result(job)
        if result is None or result.status != JobResult.Status.SUCCEEDED:
            return "-"
        text = json.dumps(result.return_value, indent=2, default=str)
        return format_html('<pre style="margin:0">{}</pre>', text[:5000])

    @admin.display(description="Error")
    def result_error(self, job: ProcrastinateJob) -> str:
        result = self._result(job)
        if result is None or not result.exception_type:
            return "-"
        return format_html(
            '<strong>{}</strong>: {}<pre style="margin:0;white-space:pre-wrap">{}</pre>',
            result.exception_type,
            result.exception_message,
            result.traceback,
        )
