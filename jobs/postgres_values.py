"""What PostgreSQL can store: the bounds of its `integer` and the text its `text` and
`jsonb` take. Every check of a value from outside against these reads them here.

This module imports nothing: `jobs.conf`, which a site's settings module imports, uses it.
"""

from __future__ import annotations

# PostgreSQL's `integer` (int4), the type of procrastinate's `priority` column.
PG_INT_MIN = -(2**31)
PG_INT_MAX = 2**31 - 1
