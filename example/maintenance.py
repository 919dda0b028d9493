"""The example's clean-up: comments past their lifetime.

One implementation, called by the periodic task `jobs.delete_expired_comments` and by the
command `delete_expired_comments`; it deletes in batches like the job system's own
maintenance (jobs/maintenance.py).
"""

from __future__ import annotations

import datetime as dt

from example.models import Comment
from jobs.maintenance import Progress, delete_in_batches


def delete_expired_comments(
    *,
    now: dt.datetime,
    lifetime: dt.timedelta,
    dry_run: bool = False,
    batch_size: int = 1000,
    on_progress: Progress = None,
) -> int:
    """Delete comments older than `lifetime` at `now`."""
    expired = Comment.objects.created_before(now - lifetime)
    return delete_in_batches(
        expired, batch_size=batch_size, dry_run=dry_run, on_progress=on_progress
    )
