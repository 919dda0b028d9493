"""`CheckedListAdmin`: an admin whose list takes only the filters and search it shows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse

from jobs import job_list

M = TypeVar("M", bound=Model)

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin as ModelAdmin  # (re-exported)
else:

    class ModelAdmin(admin.ModelAdmin):
        """Django's ModelAdmin, subscriptable as django-stubs types it (generic in its
        model): Django's own class is not, short of django_stubs_ext's monkeypatch, a
        development tool a site installing `jobs` does not have."""

        def __class_getitem__(cls, model: object) -> type:
            return cls


class CheckedListAdmin(ModelAdmin[M]):
    """An admin whose list takes only the filters and search it shows, and whose actions
    take only ids: anything else gets the list back with a message, never a server error
    (see `job_list.CheckedChangeList`)."""

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return job_list.CheckedChangeList

    def get_changelist_instance(self, request: HttpRequest) -> ChangeList:
        try:
            return super().get_changelist_instance(request)
        except IncorrectLookupParameters as exc:
            # The admin answers by redirecting to the list without its parameters; say why.
            why = str(exc) or "that page or filter does not exist."
            self.message_user(
                request, f"The list is shown without its filters: {why}", messages.ERROR
            )
            raise

    def response_action(
        self,
        request: HttpRequest,
        queryset: QuerySet[Any],
        action_location: admin.ActionLocation = admin.ActionLocation.CHANGE_LIST,
    ) -> HttpResponse | None:
        # Django filters by the selected values as they come: one that is not an id fails
        # only when the action reads the rows, as a server error.
        for value in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
            try:
                self.opts.pk.to_python(value)
            except ValidationError:
                self.message_user(
                    request,
                    f"Nothing was done: {value!r} is not the id of a row of this list.",
                    messages.ERROR,
                )
                return None
        return super().response_action(request, queryset, action_location)
