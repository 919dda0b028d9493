"""Notification, Report and Comment, moved here from the `jobs` app with their tables and rows.

They were models of `jobs` (tables jobs_notification, jobs_report and jobs_comment, made by
jobs 0001 and 0003). Where those tables exist, this migration renames them, with their
primary keys, sequences, check constraints and indexes, to the names this app would give
them, so that a database that moved and one made afresh are alike; the rows and their ids
stay. It also moves the models' content types from `jobs` to `example`: permissions hang
on the content type, so users and groups keep what they were granted (`jobs.add_report`
becomes `example.add_report`), and the admin's history keeps pointing at the rows. Where
the tables do not exist, it creates them. Its reverse puts everything back.

It runs before jobs 0007, which removes the models from the state of `jobs` and drops the
old tables on sites that do not install this app (here it finds nothing to drop).
"""

from __future__ import annotations

from typing import Any

import django.db.models.functions.datetime
from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps
from django.db.models import Model

MOVED = ("Notification", "Report", "Comment")


def _tables(schema_editor: BaseDatabaseSchemaEditor) -> set[str]:
    with schema_editor.connection.cursor() as cursor:
        return set(schema_editor.connection.introspection.table_names(cursor))


def _renamed(
    schema_editor: Any,  # its _create_index_name is not in django-stubs
    name: str,
    columns: list[str],
    old_table: str,
    new_table: str,
    declared: dict[str, str],
) -> str:
    """The name `new_table` gives what `old_table` called `name`."""
    if name in declared:  # Meta.indexes: named by the model
        return declared[name]
    # Indexes of db_index fields: named by Django, with a hash of the table's name.
    # (Django's own naming function, so that the names are those create_model gives.)
    for suffix in ("", "_like"):
        if name == schema_editor._create_index_name(old_table, columns, suffix=suffix):
            return schema_editor._create_index_name(new_table, columns, suffix=suffix)
    # Primary keys, check constraints and sequences: named by PostgreSQL after the table.
    if name.startswith(f"{old_table}_"):
        return new_table + name[len(old_table) :]
    return name


def _rename_table(
    schema_editor: BaseDatabaseSchemaEditor, old_model: type[Model], new_model: type[Model]
) -> None:
    """Rename `old_model`'s table, and what is named after it, to `new_model`'s names."""
    connection = schema_editor.connection
    quote = schema_editor.quote_name
    old_table, new_table = old_model._meta.db_table, new_model._meta.db_table
    schema_editor.alter_db_table(new_model, old_table, new_table)
    declared = {
        old.name: new.name
        for old, new in zip(old_model._meta.indexes, new_model._meta.indexes, strict=True)
    }
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, new_table)
        sequences = connection.introspection.get_sequences(cursor, new_table)
    for name, constraint in constraints.items():
        target = _renamed(
            schema_editor, name, constraint["columns"], old_table, new_table, declared
        )
        if target == name:
            continue
        if constraint["index"]:
            schema_editor.execute(f"ALTER INDEX {quote(name)} RENAME TO {quote(target)}")
        else:
            schema_editor.execute(
                f"ALTER TABLE {quote(new_table)} RENAME CONSTRAINT {quote(name)} TO {quote(target)}"
            )
    for sequence in sequences:
        target = _renamed(schema_editor, sequence["name"], [], old_table, new_table, {})
        if target != sequence["name"]:
            schema_editor.execute(
                f"ALTER SEQUENCE {quote(sequence['name'])} RENAME TO {quote(target)}"
            )


def _move_content_types(
    apps: StateApps, schema_editor: BaseDatabaseSchemaEditor, source: str, target: str
) -> None:
    """Relabel the moved models' content types from app `source` to app `target`.

    The row keeps its id, so its permissions (and their grants to users and groups) and the
    admin's log entries follow. Should `target` already have a row for a model (made by a
    `migrate` in between), the two are merged into the moving row: grants of the other's
    permissions go to the permissions of the same codename, its log entries too.
    """
    try:
        ContentType = apps.get_model("contenttypes", "ContentType")
    except LookupError:
        return  # contenttypes is not installed: there is nothing to move
    db = schema_editor.connection.alias
    for name in MOVED:
        model = name.lower()
        moving = ContentType.objects.using(db).filter(app_label=source, model=model).first()
        if moving is None:
            continue
        taken = ContentType.objects.using(db).filter(app_label=target, model=model).first()
        if taken is not None:
            _merge_content_type(apps, db, into=moving, other=taken)
        moving.app_label = target
        moving.save(using=db, update_fields=["app_label"])


def _merge_content_type(apps: StateApps, db: str, *, into: Model, other: Model) -> None:
    try:
        Permission = apps.get_model("auth", "Permission")
    except LookupError:
        Permission = None
    if Permission is not None:
        for permission in Permission.objects.using(db).filter(content_type=other):
            twin = Permission.objects.using(db).filter(
                content_type=into, codename=permission.codename
            )
            kept = twin.first()
            if kept is None:
                permission.content_type = into
                permission.save(using=db, update_fields=["content_type"])
                continue
            kept.user_set.add(*permission.user_set.all())
            kept.group_set.add(*permission.group_set.all())
            permission.delete()
    try:
        LogEntry = apps.get_model("admin", "LogEntry")
    except LookupError:
        LogEntry = None
    if LogEntry is not None:
        LogEntry.objects.using(db).filter(content_type=other).update(content_type=into)
    other.delete()


def move_in(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    tables = _tables(schema_editor)
    for name in MOVED:
        old_model = apps.get_model("jobs", name)
        new_model = apps.get_model("example", name)
        if new_model._meta.db_table in tables:
            # Ours already: this migration ran, then its record was undone by a `--fake`
            # migrate backwards. The table and its rows stay as they are.
            continue
        if old_model._meta.db_table in tables:
            _rename_table(schema_editor, old_model, new_model)
        else:
            schema_editor.create_model(new_model)
    _move_content_types(apps, schema_editor, "jobs", "example")


def move_out(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    tables = _tables(schema_editor)
    for name in MOVED:
        old_model = apps.get_model("jobs", name)
        new_model = apps.get_model("example", name)
        old_table = old_model._meta.db_table
        if old_table in tables:
            # Made again, empty, by the reverse of jobs 0007 (which runs first): the rows
            # are in this app's table, which takes its place.
            if old_model._base_manager.using(schema_editor.connection.alias).exists():
                raise RuntimeError(
                    f"Cannot move {new_model._meta.db_table} back to {old_table}: "
                    f"{old_table} exists and holds rows."
                )
            schema_editor.delete_model(old_model)
        _rename_table(schema_editor, new_model, old_model)
    _move_content_types(apps, schema_editor, "example", "jobs")


class Migration(migrations.Migration):
    initial = True

    dependencies = [("jobs", "0006_run_command_permission")]
    # jobs 0007 drops the old tables where they are left: they must be this app's by then.
    run_before = [("jobs", "0007_example_models_moved_out")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Comment",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("author", models.CharField(max_length=100)),
                        ("body", models.TextField()),
                        (
                            "created_at",
                            models.DateTimeField(
                                db_default=django.db.models.functions.datetime.Now(),
                                db_index=True,
                            ),
                        ),
                    ],
                    options={
                        "ordering": ["-created_at", "-id"],
                    },
                ),
                migrations.CreateModel(
                    name="Report",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("title", models.CharField(max_length=200)),
                        ("period_start", models.DateTimeField()),
                        ("period_end", models.DateTimeField()),
                        (
                            "status",
                            models.CharField(
                                choices=[("pending", "Pending"), ("ready", "Ready")],
                                default="pending",
                                max_length=16,
                            ),
                        ),
                        (
                            "requested_at",
                            models.DateTimeField(
                                db_default=django.db.models.functions.datetime.Now(),
                                editable=False,
                            ),
                        ),
                        ("generated_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "notifications_total",
                            models.PositiveIntegerField(blank=True, null=True),
                        ),
                        (
                            "notifications_sent",
                            models.PositiveIntegerField(blank=True, null=True),
                        ),
                        ("job_id", models.BigIntegerField(blank=True, editable=False, null=True)),
                    ],
                    options={
                        "ordering": ["-requested_at", "-id"],
                    },
                ),
                migrations.CreateModel(
                    name="Notification",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("recipient", models.EmailField(max_length=254)),
                        ("subject", models.CharField(max_length=200)),
                        ("body", models.TextField(blank=True)),
                        (
                            "created_at",
                            models.DateTimeField(
                                db_default=django.db.models.functions.datetime.Now(),
                                editable=False,
                            ),
                        ),
                        ("sent_at", models.DateTimeField(blank=True, null=True)),
                        ("job_id", models.BigIntegerField(blank=True, editable=False, null=True)),
                    ],
                    options={
                        "ordering": ["-created_at", "-id"],
                        # Was `notification_sent_at` in jobs: index names are global in
                        # PostgreSQL, and jobs 0007's reverse makes that one again.
                        "indexes": [
                            models.Index(fields=["sent_at"], name="example_notification_sent_at")
                        ],
                    },
                ),
            ],
        ),
        # After the state's CreateModel: it needs the models of both apps.
        migrations.RunPython(move_in, move_out),
    ]
