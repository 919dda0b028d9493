"""The admin's page of queues, limits and pauses: every known queue with its waiting and
running jobs and its pause, the buttons that pause and resume it, and every concurrency and
rate limit with its figures now (jobs/limits.py: running, recent starts, waiting and held
back, per key).

One page, no model list: `QueueControl` (a proxy of `PausedQueue`) only gives it its place
in the admin's index, at /admin/jobs/queuecontrol/. Viewing it needs what the job list
needs (`procrastinate.view_procrastinatejob`); pausing and resuming need `jobs.pause_queue`,
which the buttons are shown for, and whose absence refuses a POST with a 403. Pausing and
resuming call jobs/queue_pauses.py, as the commands and the API do; a name the page did
not offer (a queue no job, task or setting uses, or one that cannot be a queue's name) gets
a message, and nothing is written.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from jobs import limits, queue_overview, queue_pauses
from jobs.access import PAUSE_QUEUES, may_view_jobs
from jobs.admin.checked import ModelAdmin
from jobs.admin.formatting import moment
from jobs.conf import jobs_settings
from jobs.models import QueueControl


class QueueActionForm(forms.Form):
    action = forms.ChoiceField(choices=[("pause", "Pause"), ("resume", "Resume")])
    # Not stripped: " billing" is another queue's name, refused by check_queue_name rather
    # than quietly read as "billing".
    queue = forms.CharField(strip=False)
    reason = forms.CharField(required=False, max_length=queue_pauses.REASON_LIMIT)


def _form_problem(form: QueueActionForm) -> str:
    return " ".join(
        f"{form.fields[name].label or name.capitalize()}: {' '.join(map(str, errors))}"
        for name, errors in form.errors.items()
    )


def act(request: HttpRequest, form: QueueActionForm) -> None:
    """Pause or resume the queue the form names, and say what happened."""
    if not form.is_valid():
        messages.error(request, f"Nothing changed. {_form_problem(form)}")
        return
    action, reason = form.cleaned_data["action"], form.cleaned_data["reason"]
    try:
        queue = queue_overview.check_known_queue(form.cleaned_data["queue"])
        if action == "pause":
            changed = queue_pauses.pause(queue, by=request.user.get_username(), reason=reason)
        else:
            changed = queue_pauses.resume(queue)
    except ValidationError as error:
        messages.error(request, f"Nothing changed. {' '.join(error.messages)}")
        return
    except queue_overview.UnknownQueue as error:
        messages.error(request, f"Nothing changed. {error}")
        return
    if action == "pause" and changed:
        messages.success(
            request, f"Queue {queue!r} paused: workers take none of its jobs until it is resumed."
        )
    elif action == "pause":
        pause = queue_overview.pauses().get(queue)
        since = f" since {moment(pause.since)} by {pause.by or 'someone'}" if pause else ""
        messages.warning(request, f"Queue {queue!r} was already paused{since}; left as it was.")
    elif changed:
        messages.success(request, f"Queue {queue!r} resumed: workers take its jobs again.")
    else:
        messages.warning(request, f"Queue {queue!r} was not paused.")


@admin.register(QueueControl)
class QueueControlAdmin(ModelAdmin[QueueControl]):
    def get_urls(self) -> list[URLPattern]:
        # The page is the model's list: the index links it under the list's own name.
        name = f"{self.opts.app_label}_{self.opts.model_name}_changelist"
        return [path("", self.admin_site.admin_view(self.queues_view), name=name)]

    def has_module_permission(self, request: HttpRequest) -> bool:
        return may_view_jobs(request.user)

    def has_view_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return may_view_jobs(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @staticmethod
    def may_pause(request: HttpRequest) -> bool:
        return request.user.has_perm(PAUSE_QUEUES)

    def queues_view(self, request: HttpRequest) -> HttpResponse:
        if not may_view_jobs(request.user):
            raise PermissionDenied
        if request.method == "POST":
            if not self.may_pause(request):
                raise PermissionDenied
            act(request, QueueActionForm(request.POST))
            # After a POST, a GET: a reload does not pause or resume again.
            return HttpResponseRedirect(request.path)
        context = {
            **self.admin_site.each_context(request),
            "title": "Queues, limits and pauses",
            "subtitle": None,
            "opts": self.opts,
            "media": self.media,
            "queues": queue_overview.queue_rows(),
            "limits": limits.limit_figures(),
            # Workers fetching with procrastinate's own function apply neither.
            "limits_apply": jobs_settings.JOBS_INSTALL_WORKER_EXTRAS
            and jobs_settings.JOBS_FETCH_WITH_LIMITS,
            "may_pause": self.may_pause(request),
            "reason_limit": queue_pauses.REASON_LIMIT,
        }
        return TemplateResponse(request, "admin/jobs/queues.html", context)

    class Media:
        css = {"all": ["jobs/admin.css"]}
