from __future__ import annotations

import datetime as dt
from argparse import ArgumentTypeError
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from jobs.management.arguments import whole_number
from jobs.tokens import TokenError, issue_token


def task_list(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise ArgumentTypeError("give at least one task name")
    return names


class Command(BaseCommand):
    help = (
        "Create an API token for machine clients, limited to named tasks (and, if asked, "
        "allowed to pause queues); print it once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="A unique name saying who uses the token.")
        parser.add_argument(
            "--tasks",
            type=task_list,
            required=True,
            help="Comma-separated names of HTTP-callable tasks, e.g. jobs.send_notification",
        )
        parser.add_argument(
            "--expires-in-days",
            type=whole_number(1, 3650),
            default=None,
            help="Days until the token stops working (default: never).",
        )
        parser.add_argument(
            "--may-pause-queues",
            action="store_true",
            help="Also let it list, pause and resume queues (/api/queues/): every task's "
            "jobs in them, not only its tasks'.",
        )

    def handle(
        self,
        *args: Any,
        name: str,
        tasks: list[str],
        expires_in_days: int | None,
        may_pause_queues: bool,
        **options: Any,
    ) -> None:
        expires_at = None
        if expires_in_days is not None:
            expires_at = timezone.now() + dt.timedelta(days=expires_in_days)
        try:
            token, raw = issue_token(
                name=name, tasks=tasks, expires_at=expires_at, may_pause_queues=may_pause_queues
            )
        except TokenError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            self.style.SUCCESS(f"Token {token.name!r} created for: {', '.join(token.tasks)}.")
        )
        if token.may_pause_queues:
            self.stdout.write("It may also list, pause and resume queues.")
        if token.expires_at is not None:
            self.stdout.write(f"It expires on {token.expires_at:%Y-%m-%d %H:%M} UTC.")
        self.stdout.write("Copy it now; it is stored hashed and will not be shown again:")
        self.stdout.write(raw)
