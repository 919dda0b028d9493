"""Admin for the job system's models, and for procrastinate's jobs and events.

procrastinate's own job admin is replaced: it counts, filters and searches in ways that
read the whole table on every page (see jobs/job_list.py), which takes seconds at millions
of jobs. The job and event admins here are read-only, stay fast at that scale, show a
job's timeline, arguments and result, and act on jobs only through procrastinate's API
(jobs/job_actions.py).

One module per idea:

- `checked.py`: `CheckedListAdmin`, a list that takes only the filters and search it shows
  (the base of every list here, and of the example site's);
- `tokens.py`: the API tokens' admin (list, limit to tasks, revoke);
- `schedules.py`: the stored schedules (list, form, enable, disable, run now, their runs),
  with the periodic tasks declared in the code under their list;
- `queues.py`: the page of queues, limits and pauses (pause and resume a queue);
- `batches.py`: batches and chains of jobs (list, page with their jobs, cancel the rest,
  retry failed jobs);
- `queue_tables.py`: `QueueTableAdmin`, read-only and bounded, the base of the two below;
- `jobs.py`: procrastinate's jobs: list, job page and actions;
- `events.py`: procrastinate's events;
- `loaders.py`: a page of jobs' events and results, read in two queries;
- `timeline.py`: a job's events as an HTML table;
- `formatting.py`: how times, counts, statuses and long texts read on these pages.

Django's autodiscovery imports this package; importing the modules below registers them.
"""

from jobs.admin import batches, events, jobs, queues, schedules, tokens

__all__ = ["batches", "events", "jobs", "queues", "schedules", "tokens"]
