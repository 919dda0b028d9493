"""The `jobs.run_command` permission: the admin's "Run a maintenance command" page needs it.

The page used to need `jobs.manage_job` (cancel, abort and retry jobs), yet it runs commands
that delete jobs, tokens and comments. Nobody receives the new permission here, holders of
`manage_job` included: grant it to those who should run commands (see migrations_notes.md).
Django creates the permission row after `migrate` (its post_migrate handler).
"""

from __future__ import annotations

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("jobs", "0005_result_failure_index")]

    operations = [
        migrations.AlterModelOptions(
            name="jobresult",
            options={
                "permissions": [
                    ("view_job_status", "Can read job status and results over the API"),
                    ("defer_job", "Can defer HTTP-callable tasks over the API"),
                    ("manage_job", "Can cancel, abort and retry jobs over the API"),
                    (
                        "run_command",
                        "Can run allow-listed management commands from the admin",
                    ),
                ]
            },
        ),
    ]
