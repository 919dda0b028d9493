from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs import queue_pauses


class Command(BaseCommand):
    help = "Resume a paused queue: workers take its jobs again at once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("queue", help="The queue's name.")

    def handle(self, *args: Any, queue: str, **options: Any) -> None:
        try:
            resumed = queue_pauses.resume(queue)
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from error
        if resumed:
            self.stdout.write(self.style.SUCCESS(f"Queue {queue!r} resumed."))
        else:
            self.stdout.write(f"Queue {queue!r} was not paused.")
