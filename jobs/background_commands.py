"""Run an allow-listed management command as a background job.

Commands that people run by hand or from cron can run on the worker instead: deferred from
code (`tasks.run_management_command.defer(command="prune_jobs", args=["--dry-run"])`), from
the admin ("Run a maintenance command" page), or on a schedule (`@app.periodic` with
`task_kwargs`, see jobs/tasks.py). Only commands named in `JOBS_BACKGROUND_COMMANDS` run: a
job's arguments come from outside, and `flush` or `shell` must never be one call away.
"""

from __future__ import annotations

import argparse
import io

from django.core.management import call_command, get_commands, load_command_class

from jobs.conf import jobs_settings

OUTPUT_LIMIT = 20_000


class CommandNotAllowed(ValueError):
    pass


class CommandExited(RuntimeError):
    """The command called `sys.exit()` instead of returning or raising `CommandError`."""


def allowed_commands() -> list[str]:
    return sorted(jobs_settings.JOBS_BACKGROUND_COMMANDS)


def check_command(command: str, args: list[str]) -> None:
    """Refuse a command outside the allow-list, or arguments that are not strings."""
    if command not in jobs_settings.JOBS_BACKGROUND_COMMANDS:
        raise CommandNotAllowed(
            f"{command!r} is not allowed to run in the background; allowed: "
            f"{', '.join(allowed_commands())}."
        )
    if command not in get_commands():
        raise CommandNotAllowed(f"There is no management command {command!r}.")
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        raise CommandNotAllowed("Arguments must be a list of strings.")
    handler = load_command_class(get_commands()[command], command)
    parser = handler.create_parser("manage.py", command)
    if (printing := print_only_argument(parser, args)) is not None:
        raise CommandNotAllowed(
            f"{printing!r} only prints (the command's help or version) and runs nothing; "
            f"use `manage.py {command} --help` on a console to read it."
        )


def print_only_argument(parser: argparse.ArgumentParser, args: list[str]) -> str | None:
    """The first of `args` that argparse would read as the help or version option, or None.

    Those options print to the process's standard output and exit: on a worker, the job's
    output would be lost and the exit would end the task. argparse accepts them written out
    (`--help`), abbreviated (`--he`, when no other option starts so) and among short flags
    (`-h`, `-qh`), so the options are resolved as argparse resolves them.
    """
    # argparse gives no public way to list a parser's options or to tell help and version
    # apart from other actions; `_actions` and these two classes are stable since 3.2.
    printing = (argparse._HelpAction, argparse._VersionAction)
    actions = {option: action for action in parser._actions for option in action.option_strings}
    for arg in args:
        if arg == "--":
            break  # what follows is positional
        if arg.startswith("--"):
            name = arg.split("=", 1)[0]
            if name in actions:  # an exact name wins over abbreviations
                matched = {actions[name]}
            elif parser.allow_abbrev:
                matched = {action for option, action in actions.items() if option.startswith(name)}
            else:
                matched = set()
            # Two or more actions: ambiguous, which argparse refuses with an error.
            if len(matched) == 1 and isinstance(next(iter(matched)), printing):
                return arg
        elif arg.startswith("-"):
            # Short flags may be grouped (`-qh`); a flag that takes a value ends the group.
            for letter in arg[1:]:
                action = actions.get(f"-{letter}")
                if action is None:
                    break
                if isinstance(action, printing):
                    return arg
                if action.nargs != 0:
                    break
    return None


def run_command(command: str, args: list[str]) -> str:
    """Run the command with `args`; return what it printed (the end of it, if long).

    A `CommandError` propagates, so the job fails with the command's own message. A command
    that exits (`sys.exit()`, or argparse on an option `check_command` did not foresee)
    fails the job too, with its status and output: `SystemExit` is no `Exception`, and left
    alone it would pass every handler on its way up through the worker.
    """
    check_command(command, args)
    output = io.StringIO()
    try:
        call_command(command, *args, stdout=output, stderr=output)
    except SystemExit as exc:
        printed = output.getvalue()[-OUTPUT_LIMIT:].strip()
        raise CommandExited(
            f"{command!r} exited with status {exc.code} instead of returning"
            + (f"; its output: {printed}" if printed else ".")
        ) from None
    return output.getvalue()[-OUTPUT_LIMIT:]
