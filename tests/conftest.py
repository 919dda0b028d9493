from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client

from tests import slow_tasks  # noqa: F401  (registers the test-only tasks)

pytest_plugins = ["jobs.testing"]
TEST_TASKS = {"PROCRASTINATE_IMPORT_PATHS": "tests.slow_tasks"}


@pytest.fixture(autouse=True)
def _empty_procrastinate_tables(procrastinate_tables_cleanup: None) -> None:
    """Every transactional test starts with no job (see jobs.testing)."""


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """Disconnect stray sessions before the test database is dropped.

    Async tests run ORM calls on asgiref's thread-sensitive thread, whose connection
    stays open; worker processes killed by fault tests may leave theirs too.
    """
    yield
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def staff_user(db: None) -> User:
    """A staff member who may view procrastinate's jobs and events, and nothing else."""
    user = User.objects.create_user("operator", password="pw-for-tests", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="procrastinate",
            codename__in=["view_procrastinatejob", "view_procrastinateevent"],
        )
    )
    return user


@pytest.fixture
def staff_client(staff_user: User) -> Client:
    client = Client()
    client.force_login(staff_user)
    return client
