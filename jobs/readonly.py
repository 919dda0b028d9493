"""Close the gap in procrastinate's read-only models.

procrastinate's `ProcrastinateReadOnlyManager` refuses writes called on the manager
(`ProcrastinateJob.objects.update(...)`) and on instances (`job.save()`), but a QuerySet
built from it writes freely: `ProcrastinateJob.objects.filter(...).update(status=...)`
would change job rows behind procrastinate's back, skipping its triggers' intent and
its events. `JobsConfig.ready()` gives procrastinate's models this QuerySet, which refuses
every write while procrastinate's `READONLY_MODELS` setting is on (the default).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from django.apps import apps
from django.db import models
from procrastinate.contrib.django.exceptions import ReadOnlyModel
from procrastinate.contrib.django.settings import settings as procrastinate_settings

WRITE_METHODS = (
    "create",
    "get_or_create",
    "update_or_create",
    "bulk_create",
    "bulk_update",
    "update",
    "delete",
    "_raw_delete",
)


def _refuse(name: str) -> Callable[..., NoReturn]:
    def method(self: models.QuerySet[Any], *args: Any, **kwargs: Any) -> NoReturn:
        raise ReadOnlyModel(
            f"{self.model.__name__}.objects...{name}() is refused: procrastinate's tables "
            "change only through its API (app.job_manager), never through the ORM."
        )

    return method


class ReadOnlyQuerySet(models.QuerySet[Any]):
    def __getattribute__(self, name: str) -> Any:
        if name in WRITE_METHODS and procrastinate_settings.READONLY_MODELS:
            return _refuse(name).__get__(self)
        return super().__getattribute__(name)


def protect_procrastinate_models() -> None:
    # The async variants (aupdate, adelete, ...) call these through sync_to_async.
    for model in apps.get_app_config("procrastinate").get_models():
        # `_queryset_class` (what the manager's get_queryset() builds) is private to Django's
        # Manager and absent from django-stubs.
        model._default_manager._queryset_class = ReadOnlyQuerySet  # type: ignore[attr-defined]
