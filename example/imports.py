"""Contact imports: pasted text read into rows, one row imported per job, the summary mail the
batch's callback sends, and the progress the import page shows.

The form checks the shape of the text (one contact a line, lengths a row can store); each
row's address is checked by its own job, as a real import checks each row against rules
too slow or too many for the request. A row whose address is not one fails its job, so
that the batch counts it failed and the summary says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.core.validators import validate_email
from django.db import transaction
from procrastinate.contrib.django.models import ProcrastinateJob

from example.mail import stable_message_id
from example.models import Contact, ContactImport, ContactImportRow
from jobs import workflows

MAX_ROWS = 1000
NAME_LENGTH = ContactImportRow._meta.get_field("name").max_length or 100
EMAIL_LENGTH = ContactImportRow._meta.get_field("email").max_length or 254
# Problem lines the form names before it says "and N more"; failed lines a summary and a
# progress answer list.
PROBLEMS_SHOWN = 5
FAILURES_SHOWN = 50


@dataclasses.dataclass(frozen=True)
class PastedContact:
    line: int  # in the pasted text, counted from 1
    name: str
    email: str  # as typed


def parse_contacts(text: str) -> list[PastedContact]:
    """The contacts of `text`, one a line: `name, email` or `email` alone (a name may hold
    commas: the address is after the last one); blank lines are skipped. ValidationError
    naming the lines that are no contact (no address, a name or an address too long to
    keep), or for no contact or more than MAX_ROWS."""
    contacts: list[PastedContact] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, _, email = line.rpartition(",")
        name, email = name.strip(), email.strip()
        if not email:
            problems.append(f"Line {number}: no email address after the last comma.")
        elif len(email) > EMAIL_LENGTH:
            problems.append(f"Line {number}: the address is longer than {EMAIL_LENGTH} characters.")
        elif len(name) > NAME_LENGTH:
            problems.append(f"Line {number}: the name is longer than {NAME_LENGTH} characters.")
        else:
            contacts.append(PastedContact(line=number, name=name, email=email))
    if problems:
        more = len(problems) - PROBLEMS_SHOWN
        raise ValidationError(
            problems[:PROBLEMS_SHOWN] + ([f"… and {more} more."] if more > 0 else [])
        )
    if not contacts:
        raise ValidationError("Paste at least one contact: a name, a comma and an address.")
    if len(contacts) > MAX_ROWS:
        raise ValidationError(f"At most {MAX_ROWS} contacts per import, not {len(contacts)}.")
    return contacts


def new_rows(
    contact_import: ContactImport, contacts: list[PastedContact]
) -> list[ContactImportRow]:
    """The rows of a new import, to save with bulk_create (sync or async)."""
    return [
        ContactImportRow(
            contact_import=contact_import, line=contact.line, name=contact.name, email=contact.email
        )
        for contact in contacts
    ]


def normalized_email(typed: str) -> str:
    """`typed` as the address book keeps it (lower-cased), or ValidationError if it is no
    email address."""
    validate_email(typed)
    return typed.lower()


def import_row(*, row_id: int) -> ContactImportRow | None:
    """Import one row into the address book, or mark it invalid. Returns the row (its
    status says which), or None if it was deleted meanwhile (with its import).

    Runs again harmlessly (a job runs at least once): the row stays locked while it is
    imported, a row already imported is left as it is, and a contact is written by its
    address, so two rows with one address make one contact.
    """
    with transaction.atomic():
        row = ContactImportRow.objects.select_for_update().filter(pk=row_id).first()
        if row is None or row.status == ContactImportRow.Status.IMPORTED:
            return row
        try:
            email = normalized_email(row.email)
        except ValidationError:
            row.mark_invalid(f"{row.email!r} is not an email address.")
            return row
        # get_or_create (under update_or_create) takes a concurrent insert of the same
        # address: it reads the other's row once the unique index refused its own.
        if row.name:
            contact, _ = Contact.objects.update_or_create(email=email, defaults={"name": row.name})
        else:
            contact, _ = Contact.objects.get_or_create(email=email)
        row.mark_imported(contact)
    return row


def summary_message(contact_import: ContactImport, batch: Mapping[str, Any]) -> EmailMessage:
    """The mail that tells whoever started the import what became of its rows: the counts
    of `batch` (the argument the batch's callback gets), and the lines that failed."""
    total, succeeded = batch["total"], batch["succeeded"]
    failed, cancelled = batch["failed"], batch["cancelled"]
    lines = [
        f"Your contact import #{contact_import.pk} has finished.",
        "",
        f"Rows: {total}",
        f"Imported: {succeeded}",
        f"Failed: {failed}",
    ]
    if cancelled:
        lines.append(f"Cancelled before they ran: {cancelled}")
    invalid = contact_import.rows.filter(status=ContactImportRow.Status.INVALID)
    shown = list(invalid[:FAILURES_SHOWN])
    if shown:
        lines += ["", "Lines that failed:"]
        lines += [f"  line {row.line}: {row.error}" for row in shown]
        if len(shown) < (count := invalid.count()):
            lines.append(f"  … and {count - len(shown)} more.")
    return EmailMessage(
        subject=f"Contact import #{contact_import.pk}: {succeeded} of {total} imported",
        body="\n".join(lines) + "\n",
        to=[contact_import.summary_to],
        headers={
            "Message-ID": stable_message_id(
                "contact-import", contact_import.pk, contact_import.created_at
            )
        },
    )


def progress(contact_import: ContactImport) -> dict[str, Any]:
    """Where the import stands, as JSON-ready data: the page shows it and its script polls it.

    `state` and `counts` are its batch's (`jobs.workflows.batch_status`): running,
    succeeded, failed (at least one row failed) or cancelled; `done` once the batch has
    finished and its summary was sent or cannot be any more (its job failed, or is gone).
    """
    status = (
        workflows.batch_status(contact_import.batch_id, page_size=1)
        if contact_import.batch_id is not None
        else None
    )
    failures = contact_import.rows.filter(status=ContactImportRow.Status.INVALID)
    state = status["status"] if status is not None else "unknown"
    summary = _summary_state(contact_import, status)
    return {
        "id": contact_import.pk,
        "batch_id": contact_import.batch_id,
        "state": state,
        "counts": {
            key: status["counts"][key] if status is not None else None
            for key in ("total", "waiting", "running", "succeeded", "failed", "cancelled")
        },
        "failures": [
            {"line": row.line, "name": row.name, "email": row.email, "error": row.error}
            for row in failures[:FAILURES_SHOWN]
        ],
        "summary": {
            "to": contact_import.summary_to,
            "state": summary,
            "sent_at": contact_import.summary_sent_at.isoformat()
            if contact_import.summary_sent_at
            else None,
        },
        "done": state != "running" and summary != "waiting",
    }


def _summary_state(contact_import: ContactImport, status: dict[str, Any] | None) -> str:
    """sent, waiting (for the batch to finish, or for its job to run), failed, or gone (its
    batch or its job deleted before it was sent)."""
    if contact_import.summary_sent_at is not None:
        return "sent"
    if status is None:
        return "gone"
    callback = status["callbacks"].get("on_finish")
    if callback is None or callback["job_id"] is None:
        return "waiting"  # the batch has not finished
    job_status = (
        ProcrastinateJob.objects.filter(id=callback["job_id"])
        .values_list("status", flat=True)
        .first()
    )
    if job_status in ("todo", "doing"):
        return "waiting"
    # Its job has ended, or is gone (retention). It commits its mark before it ends: read
    # the mark again, which it may have committed since the import was read.
    sent_at = (
        ContactImport.objects.filter(pk=contact_import.pk)
        .values_list("summary_sent_at", flat=True)
        .first()
    )
    if sent_at is not None:
        contact_import.summary_sent_at = sent_at
        return "sent"
    return "failed" if job_status is not None else "gone"
