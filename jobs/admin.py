"""Admin for the example models. procrastinate's own admin (registered by its Django app)
shows job and event rows read-only; its actions go through procrastinate's job manager."""

from __future__ import annotations

from django.contrib import admin

from jobs.models import Notification, Report


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
