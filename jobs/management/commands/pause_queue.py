from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs import queue_pauses


class Command(BaseCommand):
    help = (
        "Pause a queue: workers take none of its jobs until `resume_queue`; running jobs "
        "finish, deferring still works."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("queue", help="The queue's name.")
        parser.add_argument("--reason", default="", help="Why, for the admin and /health/.")

    def handle(self, *args: Any, queue: str, reason: str, **options: Any) -> None:
        try:
            paused = queue_pauses.pause(queue, by="manage.py pause_queue", reason=reason)
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from error
        if paused:
            self.stdout.write(self.style.SUCCESS(f"Queue {queue!r} paused."))
        else:
            self.stdout.write(f"Queue {queue!r} was already paused.")
