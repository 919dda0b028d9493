"""Pausing a queue: workers stop taking its jobs until it is resumed, whatever else they serve.

A paused queue is a row of `jobs_pausedqueue` (`jobs.models.PausedQueue`). The workers' fetch
(the app's own fetch function, migration `jobs.0012`, run by the worker connector of
jobs/connector.py) skips the jobs of paused queues, so pausing takes effect at the next fetch
of every worker, on every machine, with nothing to restart: jobs running when it comes finish,
jobs deferred meanwhile wait. Resuming deletes the row and sends the wake-up procrastinate's
own insert trigger sends, on the queue's channel and on the all-queues one, so idle workers
fetch at once instead of at their next poll.

Workers run without the app's worker extras (`JOBS_INSTALL_WORKER_EXTRAS = False`) use
procrastinate's own fetch, which knows nothing of pauses.
"""

from __future__ import annotations

import json
import unicodedata

from django.core.exceptions import ValidationError
from django.db import connection, transaction

from jobs.models import PausedQueue
from jobs.postgres_values import text_problem

# procrastinate's channels (its insert trigger notifies both), and what it sends on them.
ANY_QUEUE_CHANNEL = "procrastinate_any_queue_v1"
QUEUE_CHANNEL_PREFIX = "procrastinate_queue_v1#"
WAKE_UP = json.dumps({"type": "job_inserted", "job_id": None})
QUEUE_NAME_LIMIT = 128
REASON_LIMIT = 255


def check_queue_name(queue: object) -> str:
    """`queue` if it can name a queue, else ValidationError saying why."""
    if not isinstance(queue, str) or not queue:
        raise ValidationError("A queue name is a non-empty string.")
    if len(queue) > QUEUE_NAME_LIMIT:
        raise ValidationError(f"A queue name has at most {QUEUE_NAME_LIMIT} characters.")
    if problem := text_problem(queue):
        raise ValidationError(f"Not a storable queue name: {problem}.")
    if any(unicodedata.category(char) == "Cc" for char in queue) or queue != queue.strip():
        raise ValidationError("A queue name has no control characters and no spaces around it.")
    return queue


def _check_text(value: str, name: str, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise ValidationError(f"The {name} is a string of at most {limit} characters.")
    if problem := text_problem(value):
        raise ValidationError(f"The {name} is not storable: {problem}.")
    return value


def pause(queue: str, *, by: str = "", reason: str = "") -> bool:
    """Pause `queue`; False if it was paused already (its pause is left as it was)."""
    check_queue_name(queue)
    _check_text(by, "name of who paused it", 150)
    _check_text(reason, "reason", REASON_LIMIT)
    _, created = PausedQueue.objects.get_or_create(
        queue_name=queue, defaults={"paused_by": by, "reason": reason}
    )
    return created


@transaction.atomic
def resume(queue: str) -> bool:
    """Resume `queue` and wake the workers; False if it was not paused."""
    check_queue_name(queue)
    deleted, _ = PausedQueue.objects.filter(queue_name=queue).delete()
    if deleted:
        # Sent when the transaction commits, once the row is gone for the workers too.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_notify(%s, %s), pg_notify(%s, %s)",
                [QUEUE_CHANNEL_PREFIX + queue, WAKE_UP, ANY_QUEUE_CHANNEL, WAKE_UP],
            )
    return bool(deleted)


def paused_queues() -> list[PausedQueue]:
    return list(PausedQueue.objects.all())


def is_paused(queue: str) -> bool:
    return PausedQueue.objects.filter(queue_name=queue).exists()
