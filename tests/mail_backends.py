"""Mail backends only the tests use, loaded by the worker processes they start
(`EMAIL_BACKEND=tests.mail_backends.…`)."""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from typing import Any

from django.core.mail import EmailMessage
from django.core.mail.backends import filebased


class CrashAfterSendingEmailBackend(filebased.EmailBackend):
    """Delivers like the file backend (into EMAIL_FILE_PATH), then kills its own process
    with SIGKILL: a worker that dies after the mail server accepted a message and before
    the task could record that it did."""

    def __init__(self, file_path: str | None = None, **kwargs: Any) -> None:
        # The settings pass EMAIL_FILE_PATH only to backends named like the file backend.
        super().__init__(file_path=file_path or os.environ["EMAIL_FILE_PATH"], **kwargs)

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        sent = int(super().send_messages(email_messages))
        os.kill(os.getpid(), signal.SIGKILL)
        return sent  # never reached
