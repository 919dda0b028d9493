"""Admin for the example's notifications and reports, with the job system's checked lists
(only the filters and search they show; see jobs.admin.checked.CheckedListAdmin)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin

from example.models import Notification, Report
from jobs import job_list, job_times
from jobs.admin.checked import CheckedListAdmin


@admin.register(Notification)
class NotificationAdmin(CheckedListAdmin):
    list_display = ["id", "recipient", "subject", "created_at", "sent_at", "job_id"]
    list_filter = [("sent_at", job_list.UtcDateTimeListFilter)]
    search_fields = ["recipient", "subject"]
    ordering = ["-created_at"]
    readonly_fields = ["created_at", "sent_at", "job_id"]


class ReportAdminForm(forms.ModelForm):
    class Meta:
        model = Report
        fields = [
            "title",
            "period_start",
            "period_end",
            "notifications_total",
            "notifications_sent",
        ]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        start, end = cleaned.get("period_start"), cleaned.get("period_end")
        for name, moment in (("period_start", start), ("period_end", end)):
            try:
                if moment is not None:
                    job_times.to_utc(moment)
            except job_times.ScheduleError as error:
                self.add_error(name, str(error))
                return cleaned
        if start is not None and end is not None and start >= end:
            self.add_error("period_end", "Must be after the start of the period.")
        return cleaned


@admin.register(Report)
class ReportAdmin(CheckedListAdmin):
    form = ReportAdminForm
    list_display = ["id", "title", "status", "requested_at", "generated_at", "job_id"]
    list_filter = ["status"]
    search_fields = ["title"]
    ordering = ["-requested_at"]
    readonly_fields = ["requested_at", "generated_at", "job_id", "status"]
