"""Job ids as PostgreSQL holds them: procrastinate's ids are `bigint`.

An id past that range names no job, and a query with it fails in the database; the admin's
job page and searches and the job API all check a job id here before they query.
"""

from __future__ import annotations

MAX_JOB_ID = 2**63 - 1  # PostgreSQL's bigint
_MAX_DIGITS = len(str(MAX_JOB_ID))


def is_job_id(number: int) -> bool:
    """Whether `number` fits procrastinate's id column (0 and up, as a URL's id does)."""
    return 0 <= number <= MAX_JOB_ID


def parse_job_id(text: str) -> int | None:
    """The job id `text` writes in ASCII digits, or None if it writes none that fits.

    `str.isdigit` alone accepts "²", which `int` refuses, and `int` refuses more than 4,300
    digits: each is checked before `int` sees the text.
    """
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_DIGITS:
        return None
    number = int(text)
    return number if is_job_id(number) else None
