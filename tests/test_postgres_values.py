"""What PostgreSQL can store (jobs/postgres_values.py), checked against PostgreSQL itself."""

from __future__ import annotations

import json

import pytest
from django.db import DataError, connection, transaction

from jobs.postgres_values import PG_INT_MAX, PG_INT_MIN, text_problem

pytestmark = pytest.mark.django_db

STORABLE = ["", "plain", "ünïcödé", "emoji \U0001f600", "\u0085 \u2028 \ufeff", "\x01\x7f"]
UNSTORABLE = [
    ("a\x00b", "null characters are not allowed"),
    ("\x00", "null characters are not allowed"),
    ("a\ud800b", "lone surrogate characters are not allowed"),
    ("\udfff", "lone surrogate characters are not allowed"),
]


def stores(sql: str, value: int | str) -> bool:
    """Whether PostgreSQL takes `value` in `sql` (one parameter) and gives it back."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [value])
            return bool(cursor.fetchone())
    except (DataError, ValueError, UnicodeEncodeError):
        return False


@pytest.mark.parametrize("value", STORABLE)
def test_text_problem__none_for_text_postgresql_stores(value: str) -> None:
    assert text_problem(value) is None
    assert stores("SELECT %s::text", value)
    assert stores("SELECT %s::jsonb", json.dumps(value, ensure_ascii=False))


@pytest.mark.parametrize(("value", "problem"), UNSTORABLE)
def test_text_problem__names_what_postgresql_refuses(value: str, problem: str) -> None:
    assert text_problem(value) == problem
    assert not stores("SELECT %s::text", value)


def test_pg_int_bounds__are_postgresqls_integer() -> None:
    # Parenthesized: a number bound into the SQL text as `-2147483648::integer` would cast
    # 2147483648 before negating it.
    assert stores("SELECT (%s)::integer", PG_INT_MIN)
    assert stores("SELECT (%s)::integer", PG_INT_MAX)
    assert not stores("SELECT (%s)::integer", PG_INT_MIN - 1)
    assert not stores("SELECT (%s)::integer", PG_INT_MAX + 1)
