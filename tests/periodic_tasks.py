"""A periodic task that ticks every second, loaded only by the worker processes of the
test that proves each tick is deferred once (PROCRASTINATE_IMPORT_PATHS)."""

from __future__ import annotations

from procrastinate.contrib.django import app


# Every second (croniter's sixth field is seconds).
@app.periodic(cron="* * * * * *", periodic_id="every-second")
@app.task(name="tests.every_second", queue="tests")
def every_second(timestamp: int) -> int:
    return timestamp
