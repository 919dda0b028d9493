"""The API tokens' admin: list them, limit one to other tasks, revoke; take a token's
capability to pause queues away, or give it, for users who may pause queues themselves."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from jobs.access import PAUSE_QUEUES
from jobs.admin.checked import CheckedListAdmin
from jobs.models import ApiToken
from jobs.tokens import TokenError, validate_task_names

if TYPE_CHECKING:
    ApiTokenModelForm = forms.ModelForm[ApiToken]
else:
    ApiTokenModelForm = forms.ModelForm  # not subscriptable at run time


class ApiTokenForm(ApiTokenModelForm):
    class Meta:
        model = ApiToken
        fields = ["tasks", "may_pause_queues", "revoked_at"]

    def clean_tasks(self) -> list[str]:
        tasks: object = self.cleaned_data["tasks"]
        if not isinstance(tasks, list) or not all(isinstance(name, str) for name in tasks):
            raise forms.ValidationError('A JSON list of task names, e.g. ["jobs.build_report"].')
        try:
            return validate_task_names(tasks)
        except TokenError as exc:
            raise forms.ValidationError(str(exc)) from exc


@admin.register(ApiToken)
class ApiTokenAdmin(CheckedListAdmin[ApiToken]):
    """Tokens are created with `manage.py create_api_token` (the clear token is shown once
    there); here they are listed, limited to other tasks, or revoked. A revoked token
    stays revoked: its revocation time is read-only here, and `ApiToken.clean` refuses a
    change to it from any form."""

    form = ApiTokenForm
    list_display = [
        "name",
        "key_id",
        "tasks",
        "may_pause_queues",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter), "may_pause_queues"]
    search_fields = ["name", "key_id"]
    ordering = ["name"]
    readonly_fields = ["name", "key_id", "created_at", "last_used_at"]
    fields = [
        "name",
        "key_id",
        "tasks",
        "may_pause_queues",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> list[str]:
        readonly = list(self.readonly_fields)
        if obj is not None and obj.stored_revoked_at() is not None:
            readonly.append("revoked_at")
        # Whoever may change tokens but not pause queues cannot hand a token that power.
        if not request.user.has_perm(PAUSE_QUEUES):
            readonly.append("may_pause_queues")
        return readonly

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        now = timezone.now()
        tokens = list(ApiToken.objects.active().filter(pk__in=queryset))
        for token in tokens:
            token.revoke(at=now)
        self.message_user(request, f"Revoked {len(tokens)} token(s).", messages.SUCCESS)
