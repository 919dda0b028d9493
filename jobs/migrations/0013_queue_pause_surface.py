"""What people see of paused queues: the admin's page of queues, limits and pauses, and the
API tokens' capability to pause queues.

- `QueueControl`, a proxy of `PausedQueue` with no table and no permission: the page's entry
  in the admin's index (jobs/admin/queues.py);
- `ApiToken.may_pause_queues`, false for every token issued before (a database default, so
  the column is added in one statement whatever the table's size): a pause stops every
  task's jobs in the queue, more than an existing token was given.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0012_limits"),
    ]

    operations = [
        migrations.CreateModel(
            name="QueueControl",
            fields=[],
            options={
                "verbose_name": "queues, limits and pauses",
                "verbose_name_plural": "queues, limits and pauses",
                "proxy": True,
                "default_permissions": (),
                "indexes": [],
                "constraints": [],
            },
            bases=("jobs.pausedqueue",),
        ),
        migrations.AddField(
            model_name="apitoken",
            name="may_pause_queues",
            field=models.BooleanField(
                db_default=False,
                default=False,
                help_text="May list, pause and resume queues over the API (every task's jobs in them).",
            ),
        ),
    ]
