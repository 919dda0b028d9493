"""Two staff pages in the admin that have no model behind them: the periodic schedule
(read-only) and a form that defers an allow-listed management command as a job.

Each needs a permission of its own beyond staff status: the schedule shows the jobs the
scheduler deferred and their outcome, so it needs what the job list needs
(`procrastinate.view_procrastinatejob`); running a command needs `jobs.run_command`,
which no other permission implies, as the commands delete jobs, tokens and comments.

They get the admin site that routes them (`admin_site`), whose header, sidebar and links
they show: a site may have an AdminSite of its own.
"""

from __future__ import annotations

import shlex

from django import forms
from django.contrib import messages
from django.contrib.admin import AdminSite
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils import timezone

from jobs import background_commands, tasks
from jobs.access import staff_who_may_view_jobs
from jobs.periodic import periodic_overview


@staff_who_may_view_jobs
def periodic_tasks(request: HttpRequest, *, admin_site: AdminSite) -> HttpResponse:
    context = {
        **admin_site.each_context(request),
        "title": "Periodic tasks",
        "overview": periodic_overview(now=timezone.now()),
    }
    return TemplateResponse(request, "admin/jobs/periodic_tasks.html", context)


def _command_choices() -> list[tuple[str, str]]:
    return [(name, name) for name in background_commands.allowed_commands()]


class RunCommandForm(forms.Form):
    # A callable: Django reads the allow-list each time the choices are shown or checked.
    command = forms.ChoiceField(choices=_command_choices)
    arguments = forms.CharField(
        required=False, help_text="As on a command line, e.g. --dry-run --days 3"
    )

    def clean(self) -> dict[str, object]:
        cleaned = super().clean() or {}
        try:
            args = shlex.split(cleaned.get("arguments") or "")
        except ValueError as exc:
            raise forms.ValidationError(f"Arguments: {exc}.") from exc
        try:
            background_commands.check_command(str(cleaned.get("command", "")), args)
        except background_commands.CommandNotAllowed as exc:
            raise forms.ValidationError(str(exc)) from exc
        cleaned["args"] = args
        return cleaned


@permission_required("jobs.run_command", raise_exception=True)
def run_command(request: HttpRequest, *, admin_site: AdminSite) -> HttpResponse:
    form = RunCommandForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        command, args = form.cleaned_data["command"], form.cleaned_data["args"]
        # Who asked stays with the job: in its arguments, on its page and in its result.
        job_id = tasks.run_management_command.defer(
            command=command, args=args, requested_by=request.user.get_username()
        )
        messages.success(request, f"Deferred job #{job_id}: {command} {' '.join(args)}".strip())
        return redirect("admin:procrastinate_procrastinatejob_change", job_id)
    context = {
        **admin_site.each_context(request),
        "title": "Run a maintenance command",
        "form": form,
    }
    return TemplateResponse(request, "admin/jobs/run_command.html", context)
