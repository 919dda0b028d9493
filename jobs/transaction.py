"""`async_atomic`: a database transaction for async views.

Django's `transaction.atomic` is sync-only. Under an ASGI server every `sync_to_async` call
with `thread_sensitive=True` made while handling one request runs on the same thread, and
so on the same database connection. That holds for Django's async ORM (`acreate`, `asave`)
and for procrastinate's `defer_async` through its Django connector. Entering and leaving
`atomic` on that thread therefore puts the async ORM writes and the job row in one
transaction: if the block raises, both are rolled back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from asgiref.sync import sync_to_async
from django.db import transaction


@asynccontextmanager
async def async_atomic(using: str | None = None) -> AsyncIterator[None]:
    atomic = transaction.atomic(using=using)
    await sync_to_async(atomic.__enter__, thread_sensitive=True)()
    try:
        yield
    except BaseException as exc:
        await sync_to_async(atomic.__exit__, thread_sensitive=True)(
            type(exc), exc, exc.__traceback__
        )
        raise
    else:
        await sync_to_async(atomic.__exit__, thread_sensitive=True)(None, None, None)
