from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs.tokens import TokenError, issue_token


def task_list(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise ValueError("give at least one task name")
    return names


class Command(BaseCommand):
    help = "Create an API token for machine clients, limited to named tasks; print it once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="A unique name saying who uses the token.")
        parser.add_argument(
            "--tasks",
            type=task_list,
            required=True,
            help="Comma-separated names of HTTP-callable tasks, e.g. jobs.send_notification",
        )

    def handle(self, *args: Any, name: str, tasks: list[str], **options: Any) -> None:
        try:
            token, raw = issue_token(name=name, tasks=tasks)
        except TokenError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            self.style.SUCCESS(f"Token {token.name!r} created for: {', '.join(token.tasks)}.")
        )
        self.stdout.write("Copy it now; it is stored hashed and will not be shown again:")
        self.stdout.write(raw)
