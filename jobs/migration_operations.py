"""A migration operation for indexes on procrastinate's tables (and other large ones).

Django's `AddIndexConcurrently` only touches models of the migration's own app and skips
unmanaged models such as procrastinate's, so `jobs` migrations cannot use it on
`procrastinate_jobs`. `CreateIndexConcurrently` runs the same SQL, and also recovers from an
interrupted build: CREATE INDEX CONCURRENTLY leaves an INVALID index behind when it fails
(a deadlock, a cancelled deploy), which a plain `IF NOT EXISTS` would keep forever.
Use it in a migration with `atomic = False`. It changes no model state.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.operations.base import Operation
from django.db.migrations.state import ProjectState


class CreateIndexConcurrently(Operation):
    """CREATE INDEX CONCURRENTLY `name` ON `definition`, unless a valid one exists."""

    reduces_to_sql = True
    reversible = True
    atomic = False

    def __init__(self, name: str, definition: str) -> None:
        self.name = name
        self.definition = definition

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return (self.__class__.__qualname__, [], {"name": self.name, "definition": self.definition})

    def state_forwards(self, app_label: str, state: ProjectState) -> None:
        pass

    def database_forwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        create = f"CREATE INDEX CONCURRENTLY {self.name} ON {self.definition}"
        if schema_editor.collect_sql:  # sqlmigrate: show the statement, look at nothing
            schema_editor.execute(create)
            return
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(
                "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [self.name]
            )
            row = cursor.fetchone()
        if row is not None and row[0]:
            return
        if row is not None:  # left INVALID by an interrupted build
            schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {self.name}")
        schema_editor.execute(create)

    def database_backwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {self.name}")

    def describe(self) -> str:
        return f"Create index {self.name} concurrently"
