"""What PostgreSQL can store: the bounds of its `integer` and the text its `text` and
`jsonb` take. Every check of a value from outside against these reads them here.

This module imports nothing: `jobs.conf`, which a site's settings module imports, uses it.
"""

from __future__ import annotations

# PostgreSQL's `integer` (int4), the type of procrastinate's `priority` column.
PG_INT_MIN = -(2**31)
PG_INT_MAX = 2**31 - 1
# PostgreSQL's `bigint` (int8), the type of the ids of jobs and of the app's own rows.
PG_BIGINT_MAX = 2**63 - 1


def text_problem(value: str) -> str | None:
    """Why PostgreSQL could not store `value` as text, or None if it can: `text` and `jsonb`
    hold no NUL character, and a lone surrogate has no UTF-8 encoding."""
    if "\x00" in value:
        return "null characters are not allowed"
    try:
        value.encode()
    except UnicodeEncodeError:
        return "lone surrogate characters are not allowed"
    return None


def storable_text(value: str) -> str:
    """`value` with what PostgreSQL's text refuses replaced: NUL by U+FFFD, a lone surrogate
    by "?". For text the job system records as it is (an exception's message, a traceback),
    where refusing is not an option."""
    if text_problem(value) is None:
        return value
    return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
