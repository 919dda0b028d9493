"""The example's models moved from `jobs` to `example` (example 0001, jobs 0007).

Each test takes the test database back to the previous layout (the migrations of the
previous main: jobs up to 0006, no example app), puts data in with the models of that
time, and migrates to the new layout again; the fixture leaves the database migrated,
whatever happens.
"""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.state import StateApps
from django.utils import timezone

from example.models import Comment, Notification, Report

pytestmark = pytest.mark.django_db(transaction=True)

MODELS = ("notification", "report", "comment")
LAST_OLD_JOBS_MIGRATION = ("jobs", "0006_run_command_permission")
# The previous main's leaves: jobs up to 0006, nothing of the example app.
OLD_LAYOUT = [LAST_OLD_JOBS_MIGRATION, ("example", None)]
# Right after the move, before any later migration of either app.
MOVED_LAYOUT = [("jobs", "0007_example_models_moved_out"), ("example", "0001_initial")]
moved_out = importlib.import_module("jobs.migrations.0007_example_models_moved_out")


class Migrator:
    def __init__(self) -> None:
        self.leaves = MigrationExecutor(connection).loader.graph.leaf_nodes()

    def to_old_layout(self) -> StateApps:
        """Migrate back to the previous main's layout; its models (jobs.Notification, …)."""
        executor = MigrationExecutor(connection)
        executor.migrate(OLD_LAYOUT)
        ContentType.objects.clear_cache()
        return MigrationExecutor(connection).loader.project_state(LAST_OLD_JOBS_MIGRATION).apps

    def to_new_layout(self) -> None:
        MigrationExecutor(connection).migrate(self.leaves)
        ContentType.objects.clear_cache()


@pytest.fixture
def migrator() -> Iterator[Migrator]:
    migrator = Migrator()
    yield migrator
    migrator.to_new_layout()


def tables() -> set[str]:
    with connection.cursor() as cursor:
        names = connection.introspection.table_names(cursor)
    return {name for name in names if name.split("_", 1)[-1] in MODELS}


def schema(table: str) -> dict[str, Any]:
    """What a table is made of, by name: columns, constraints, indexes, sequences."""
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
        sequences = connection.introspection.get_sequences(cursor, table)
        cursor.execute(
            "SELECT column_name, data_type, is_nullable, column_default, is_identity"
            " FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
            [table],
        )
        columns = cursor.fetchall()
    return {
        "columns": columns,
        "constraints": {
            name: (c["columns"], c["primary_key"], c["unique"], c["check"], c["index"])
            for name, c in constraints.items()
        },
        "sequences": sorted(sequence["name"] for sequence in sequences),
    }


def permission(app_label: str, codename: str) -> Permission:
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


def test_example_migration__keeps_rows_ids_content_types_grants_and_history(
    migrator: Migrator,
) -> None:
    old = migrator.to_old_layout()
    assert tables() == {f"jobs_{model}" for model in MODELS}
    now = timezone.now()
    notification = old.get_model("jobs", "Notification").objects.create(
        recipient="ada@example.com", subject="Kept", sent_at=now, job_id=41
    )
    report = old.get_model("jobs", "Report").objects.create(
        title="Q1", period_start=now - dt.timedelta(days=1), period_end=now, status="ready"
    )
    comment = old.get_model("jobs", "Comment").objects.create(author="ada", body="Kept")
    content_types = {
        model: ContentType.objects.filter(app_label="jobs", model=model).get().pk
        for model in MODELS
    }
    granted = User.objects.create_user("granted")
    granted.user_permissions.add(permission("jobs", "add_notification"))
    group = Group.objects.create(name="reporters")
    group.permissions.add(permission("jobs", "view_report"))
    member = User.objects.create_user("member")
    member.groups.add(group)
    LogEntry.objects.create(
        user=granted,
        content_type_id=content_types["notification"],
        object_id=str(notification.pk),
        object_repr="Kept",
        action_flag=ADDITION,
    )

    migrator.to_new_layout()

    assert tables() == {f"example_{model}" for model in MODELS}
    moved = Notification.objects.get()
    assert (moved.pk, moved.subject, moved.sent_at, moved.job_id) == (
        notification.pk,
        "Kept",
        now,
        41,
    )
    assert Report.objects.get().pk == report.pk
    assert Report.objects.get().status == Report.Status.READY
    assert Comment.objects.get().pk == comment.pk
    # The tables' sequences came along: new rows follow the old ones.
    assert Notification.objects.create(recipient="b@example.com", subject="New").pk > moved.pk
    assert not ContentType.objects.filter(app_label="jobs", model__in=MODELS).exists()
    assert {
        model: ContentType.objects.get_by_natural_key("example", model).pk for model in MODELS
    } == content_types
    assert User.objects.get(pk=granted.pk).has_perm("example.add_notification")
    assert User.objects.get(pk=member.pk).has_perm("example.view_report")
    assert not User.objects.get(pk=member.pk).has_perm("example.add_notification")
    assert LogEntry.objects.get().get_edited_object() == moved


def test_example_migration__merges_a_content_type_made_for_the_example_in_between(
    migrator: Migrator,
) -> None:
    """Should the example app's content type exist already (a `migrate` in between made it),
    nobody loses a grant: the rows merge into the moving one."""
    migrator.to_old_layout()
    original = ContentType.objects.get(app_label="jobs", model="notification")
    early = User.objects.create_user("early")
    early.user_permissions.add(permission("jobs", "add_notification"))
    made_in_between = ContentType.objects.create(app_label="example", model="notification")
    late = User.objects.create_user("late")
    late.user_permissions.add(
        Permission.objects.create(
            content_type=made_in_between, codename="add_notification", name="Can add"
        ),
        Permission.objects.create(
            content_type=made_in_between, codename="export_notification", name="Can export"
        ),
    )

    migrator.to_new_layout()

    kept = ContentType.objects.get(app_label="example", model="notification")
    assert kept.pk == original.pk
    assert not ContentType.objects.filter(pk=made_in_between.pk).exists()
    assert User.objects.get(pk=early.pk).has_perm("example.add_notification")
    late_permissions = User.objects.get(pk=late.pk).get_all_permissions()
    assert {"example.add_notification", "example.export_notification"} <= late_permissions
    assert Permission.objects.filter(content_type=kept, codename="add_notification").count() == 1


def test_example_migration__every_path_gives_the_same_tables(migrator: Migrator) -> None:
    """Renamed or made afresh, forwards or backwards, the tables have the same names of
    constraints, indexes and sequences. A site that installs `jobs` alone (jobs 0007 run
    without the example app) drops the old tables, unless they hold rows."""
    renamed_in = {model: schema(f"example_{model}") for model in MODELS}
    old = migrator.to_old_layout()
    renamed_back = {model: schema(f"jobs_{model}") for model in MODELS}
    old.get_model("jobs", "Comment").objects.create(author="ada", body="Kept")

    with (
        pytest.raises(moved_out.MovedTableNotEmpty, match=r"^jobs_comment hold rows"),
        connection.schema_editor() as editor,
    ):
        moved_out.drop_moved_tables(old, editor)
    assert tables() == {f"jobs_{model}" for model in MODELS}

    old.get_model("jobs", "Comment").objects.all().delete()
    with connection.schema_editor() as editor:
        moved_out.drop_moved_tables(old, editor)
    assert tables() == set()
    with connection.schema_editor() as editor:
        moved_out.make_moved_tables(old, editor)
    assert {model: schema(f"jobs_{model}") for model in MODELS} == renamed_back
    with connection.schema_editor() as editor:
        moved_out.drop_moved_tables(old, editor)

    migrator.to_new_layout()  # example 0001 finds no table to take over: it makes them

    assert {model: schema(f"example_{model}") for model in MODELS} == renamed_in


def test_example_migration__records_faked_back_then_applied_keeps_the_tables(
    migrator: Migrator,
) -> None:
    """`migrate --fake` backwards undoes the records and leaves the tables: applying the
    migrations again (for real) must take the example's tables as they are, rows included.

    The database is first taken back, for real, to the layout the move made (example 0001,
    jobs 0007): later migrations add columns, and like any AddField would fail on a column
    a fake reversal left behind; what this checks is 0001 taking over tables that exist."""
    MigrationExecutor(connection).migrate(MOVED_LAYOUT)
    notification = Notification.objects.create(recipient="ada@example.com", subject="kept")
    executor = MigrationExecutor(connection)
    executor.migrate(OLD_LAYOUT, fake=True)

    migrator.to_new_layout()

    assert tables() == {f"example_{model}" for model in MODELS}
    assert Notification.objects.get().pk == notification.pk
