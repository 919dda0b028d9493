"""Notification, Report and Comment are no longer models of `jobs`: they were the example
site's, which is an app of its own now.

This project's `example` app takes their tables, rows and content types over in its first
migration, which runs before this one: here there is then nothing left to drop. A site that
installs `jobs` without that app drops the three tables, which the early `jobs` migrations
made; it refuses to drop one that holds rows, and says what to do.
"""

from __future__ import annotations

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

MOVED = ("Notification", "Report", "Comment")


class MovedTableNotEmpty(RuntimeError):
    pass


def drop_moved_tables(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    with schema_editor.connection.cursor() as cursor:
        tables = set(schema_editor.connection.introspection.table_names(cursor))
    models = [apps.get_model("jobs", name) for name in MOVED]
    present = [model for model in models if model._meta.db_table in tables]
    db = schema_editor.connection.alias
    holding = [model._meta.db_table for model in present if model._base_manager.using(db).exists()]
    if holding:
        raise MovedTableNotEmpty(
            f"{', '.join(holding)} hold rows of the example models Notification, Report and "
            "Comment, which are no longer part of `jobs`. To keep them, add the project's "
            "`example` app to INSTALLED_APPS: its migration takes the tables over. If they "
            f"are not needed, drop them (DROP TABLE {', '.join(holding)};). Then migrate again."
        )
    for model in present:
        schema_editor.delete_model(model)


def make_moved_tables(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Back to the state of 0006, whose models have tables: empty ones where none exist.
    (Where the example app took them over, its own reverse then puts its rows back in.)"""
    with schema_editor.connection.cursor() as cursor:
        tables = set(schema_editor.connection.introspection.table_names(cursor))
    for name in MOVED:
        model = apps.get_model("jobs", name)
        if model._meta.db_table not in tables:
            schema_editor.create_model(model)


class Migration(migrations.Migration):
    dependencies = [("jobs", "0006_run_command_permission")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="Comment"),
                migrations.DeleteModel(name="Notification"),
                migrations.DeleteModel(name="Report"),
            ],
            database_operations=[migrations.RunPython(drop_moved_tables, make_moved_tables)],
        ),
    ]
