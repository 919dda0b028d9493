"""Every ended attempt of a job, not only the last: `JobResult.attempts_log` (a JSONB list)
and the worker's procrastinate id, `worker_id`.

The column gets a database default, '[]'::jsonb: the rows already there get an empty log,
and SQL that does not name the column (a worker still running the previous code during a
deploy, the benchmark's seeding) still inserts rows. Adding a column with a constant
default rewrites no rows in PostgreSQL: this is quick on a large table.
"""

from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("jobs", "0007_example_models_moved_out")]

    operations = [
        migrations.AddField(
            model_name="jobresult",
            name="worker_id",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="jobresult",
            name="attempts_log",
            field=models.JSONField(
                blank=True,
                db_default=models.Value([], output_field=models.JSONField()),
                default=list,
            ),
        ),
    ]
