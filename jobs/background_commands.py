"""Run an allow-listed management command as a background job.

Commands that people run by hand or from cron can run on the worker instead: deferred from
code (`tasks.run_management_command.defer(command="prune_jobs", args=["--dry-run"])`), from
the admin ("Run a maintenance command" page), or on a schedule (`@app.periodic` with
`task_kwargs`, see jobs/tasks.py). Only commands named in `JOBS_BACKGROUND_COMMANDS` run: a
job's arguments come from outside, and `flush` or `shell` must never be one call away.
"""

from __future__ import annotations

import io

from django.conf import settings
from django.core.management import call_command, get_commands

OUTPUT_LIMIT = 20_000


class CommandNotAllowed(ValueError):
    pass


def allowed_commands() -> list[str]:
    return sorted(settings.JOBS_BACKGROUND_COMMANDS)


def check_command(command: str, args: list[str]) -> None:
    """Refuse a command outside the allow-list, or arguments that are not strings."""
    if command not in settings.JOBS_BACKGROUND_COMMANDS:
        raise CommandNotAllowed(
            f"{command!r} is not allowed to run in the background; allowed: "
            f"{', '.join(allowed_commands())}."
        )
    if command not in get_commands():
        raise CommandNotAllowed(f"There is no management command {command!r}.")
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        raise CommandNotAllowed("Arguments must be a list of strings.")


def run_command(command: str, args: list[str]) -> str:
    """Run the command with `args`; return what it printed (the end of it, if long).

    A `CommandError` propagates, so the job fails with the command's own message.
    """
    check_command(command, args)
    output = io.StringIO()
    call_command(command, *args, stdout=output, stderr=output)
    return output.getvalue()[-OUTPUT_LIMIT:]
