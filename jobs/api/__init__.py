"""The JSON job API: defer a task by name, read a job's status, list tasks, act on jobs.

Routes (see jobs/urls.py), each in a sync and an async implementation that share all
their checks; the async one (under /api/async/) uses `defer_async` and the async ORM:

    POST /api/jobs/                    defer: {"task": ..., "kwargs": {...}, options}
    GET  /api/jobs/<id>/               status, progress, result or error
    POST /api/jobs/<id>/cancel/        cancel a job that has not started
    POST /api/jobs/<id>/abort/         request abort of a running job (cancels a waiting one)
    POST /api/jobs/<id>/retry/         retry a failed job
    GET  /api/tasks/                   the task registry
    POST /api/batches/                 defer a batch: {"jobs": [job, ...], "on_success": ..., ...}
    GET  /api/batches/<id>/            status, counts, one page of jobs (?page=, ?page_size=)
    POST /api/batches/<id>/cancel/     cancel the batch's waiting jobs, ask running ones to stop
    POST /api/batches/<id>/retry/      retry the batch's failed jobs
    GET  /api/queues/                  every known queue: its jobs waiting and running, its pause
    POST /api/queues/<name>/pause/     pause a queue: {"reason": ...} (optional)
    POST /api/queues/<name>/resume/    resume it

Machine clients send `Authorization: Bearer <token>` (tokens are limited to named tasks);
session users need the `jobs.defer_job`, `jobs.view_job_status` or `jobs.manage_job`
permission, and CSRF applies to them (the batch routes ask the same permissions as the
job routes: defer, view, manage; the queue routes ask `jobs.pause_queue`, and of a token
the capability to pause queues, see queues.py). Every error is a JSON body `{"error": ..., "field":
...}` with its status code, and no error path writes a job row.

What a client sends is confined to what it was given: its locks are namespaced by the task
(`http_tasks.api_lock`), its priority is at most JOBS_API_MAX_PRIORITY, its schedule is
bounded (`job_times.scheduled_time`), and a job of a task it may not use is, to it, a job
that does not exist.

One module per idea:

- `errors.py`: `ApiError`, the JSON error answer every check raises;
- `auth.py`: who is asking (a token or a session user) and what it may do;
- `requests.py`: what is asked: the body read within bounds, a defer request checked
  field by field, the task resolved and configured;
- `views.py`: the views, sync and async, and the shape of their answers;
- `queues.py`: the queue routes' views (list, pause, resume), sync and async.
"""
