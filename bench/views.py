"""Views of the benchmark's web server only (`bench_jobs` measures what deferring adds to a
view's response time): the same write with and without a deferred job, sync and async."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from bench.worker_tasks import noop_async, noop_sync
from example.models import Notification
from jobs.transaction import async_atomic


@csrf_exempt
def write(request: HttpRequest) -> HttpResponse:
    with transaction.atomic():
        notification = Notification.objects.create(recipient="bench@example.com", subject="b")
    return HttpResponse(str(notification.pk), status=201)


@csrf_exempt
def write_and_defer(request: HttpRequest) -> HttpResponse:
    with transaction.atomic():
        notification = Notification.objects.create(recipient="bench@example.com", subject="b")
        noop_sync.defer(n=notification.pk)
    return HttpResponse(str(notification.pk), status=201)


@csrf_exempt
async def awrite(request: HttpRequest) -> HttpResponse:
    async with async_atomic():
        notification = await Notification.objects.acreate(
            recipient="bench@example.com", subject="b"
        )
    return HttpResponse(str(notification.pk), status=201)


@csrf_exempt
async def awrite_and_defer(request: HttpRequest) -> HttpResponse:
    async with async_atomic():
        notification = await Notification.objects.acreate(
            recipient="bench@example.com", subject="b"
        )
        await noop_async.defer_async(n=notification.pk)
    return HttpResponse(str(notification.pk), status=201)
