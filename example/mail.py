"""What the example's mails have in common."""

from __future__ import annotations

import datetime as dt
from email.utils import parseaddr

from django.conf import settings


def stable_message_id(kind: str, pk: int, created_at: dt.datetime) -> str:
    """The Message-ID of the mail about row `pk` of `kind`: the same at every run of the job
    that sends it, so that the receiving side can drop a duplicate.

    Django would make a random one per message. The id alone could come back in a database
    created afresh, so the row's creation time goes in too; the domain is the sender's (a
    worker's own host name would differ from machine to machine).
    """
    domain = parseaddr(settings.DEFAULT_FROM_EMAIL)[1].rpartition("@")[2] or "localhost"
    created = created_at.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"<{kind}-{pk}.{created}@{domain}>"
