"""procrastinate's job statuses and event types, named once for the whole app.

procrastinate 3.10's own lists do not serve: its `Status` enum keeps the legacy `aborting`,
and its Django model's event types lack `retried`. This module imports nothing, so that any
module (settings checks included) may use it.
"""

from __future__ import annotations

# A job waiting or running; a job in any other status is finished and never runs again.
ACTIVE_STATUSES = ("todo", "doing")
# The final statuses: what retention prunes, per status, and what the figures count.
FINISHED_STATUSES = ("succeeded", "failed", "cancelled", "aborted")
STATUSES = (*ACTIVE_STATUSES, *FINISHED_STATUSES)

EVENT_TYPES = (
    "deferred",
    "scheduled",
    "started",
    "deferred_for_retry",
    "retried",
    "succeeded",
    "failed",
    "cancelled",
    "abort_requested",
    "aborted",
)
# Events after which a job is due: its deferral, or the time it was scheduled for, or
# retried at (procrastinate writes a "scheduled" event at that time). The time from the
# latest of them to "started" is the job's wait.
DUE_EVENTS = ("deferred", "scheduled", "deferred_for_retry", "retried")
# Events that end an attempt: a final status, or a retry after a failure. The time from
# "started" to one of them is the attempt's run.
ATTEMPT_END_EVENTS = ("succeeded", "failed", "aborted", "deferred_for_retry")
