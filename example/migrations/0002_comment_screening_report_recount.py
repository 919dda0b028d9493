"""Comments are screened before they are published; reports may be recounted.

Both by django.tasks tasks (example/tasks.py), whose result ids the rows keep. Comments that
exist already were never screened: they were shown as they came, so they start published;
new ones start pending.
"""

from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("example", "0001_initial")]

    operations = [
        # Published for the rows already there, then pending as the default of new ones.
        migrations.AddField(
            model_name="comment",
            name="status",
            field=models.CharField(
                choices=[("pending", "Pending"), ("published", "Published"), ("held", "Held")],
                default="published",
                max_length=16,
            ),
        ),
        migrations.AlterField(
            model_name="comment",
            name="status",
            field=models.CharField(
                choices=[("pending", "Pending"), ("published", "Published"), ("held", "Held")],
                default="pending",
                max_length=16,
            ),
        ),
        migrations.AddField(
            model_name="comment",
            name="screened_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="comment",
            name="task_result_id",
            field=models.CharField(blank=True, editable=False, max_length=64),
        ),
        migrations.AddField(
            model_name="report",
            name="recount_result_id",
            field=models.CharField(blank=True, editable=False, max_length=64),
        ),
    ]
