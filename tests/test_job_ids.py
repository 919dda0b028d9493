"""jobs/job_ids.py: which texts and numbers are job ids PostgreSQL can hold."""

from __future__ import annotations

import pytest

from jobs.job_ids import MAX_JOB_ID, is_job_id, parse_job_id


@pytest.mark.parametrize(
    ("text", "job_id"),
    [
        ("0", 0),
        ("42", 42),
        ("007", 7),
        (str(MAX_JOB_ID), MAX_JOB_ID),
        (str(MAX_JOB_ID + 1), None),
        ("0" * 30 + "1", None),  # longer than any id is written
        ("1" * 5000, None),  # past int()'s 4,300 digits
        ("²", None),  # a digit to str.isdigit, not to int()
        ("٣", None),  # an Arabic-Indic three: int() reads it, an id is ASCII
        ("-1", None),
        (" 1", None),
        ("", None),
        ("1e3", None),
    ],
)
def test_parse_job_id__ascii_digits_within_bigint(text: str, job_id: int | None) -> None:
    assert parse_job_id(text) == job_id


def test_is_job_id__the_bigint_range_from_zero() -> None:
    assert is_job_id(0)
    assert is_job_id(MAX_JOB_ID)
    assert not is_job_id(MAX_JOB_ID + 1)
    assert not is_job_id(-1)
