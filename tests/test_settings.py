"""Settings come from the environment; production refuses unsafe values."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings

SHOW_DATABASE = (
    "from django.conf import settings; "
    "print(settings.DATABASES['default']['ENGINE'], settings.DEBUG)"
)


def import_settings(code: str = SHOW_DATABASE, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "DJANGO_ENV", "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS"}
    }
    environment.update(env, DJANGO_SETTINGS_MODULE="project.settings")
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )


def test_settings__development_defaults_use_embedded_postgres() -> None:
    result = import_settings()

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["project.embedded_postgres", "True"]


def test_settings__database_url_selects_plain_postgresql() -> None:
    result = import_settings(DATABASE_URL="postgres://app:secret@db.internal:5433/site")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.postgresql", "True"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DJANGO_ENV": "production", "ALLOWED_HOSTS": "example.com"}, "SECRET_KEY must be set"),
        (
            {"DJANGO_ENV": "production", "SECRET_KEY": "s" * 50, "DEBUG": "1"},
            "DEBUG must be off",
        ),
        ({"DJANGO_ENV": "production", "SECRET_KEY": "s" * 50}, "ALLOWED_HOSTS must be set"),
        (
            {"DJANGO_ENV": "production", "SECRET_KEY": "s" * 50, "ALLOWED_HOSTS": "example.com"},
            "DATABASE_URL must be set",
        ),
        ({"DJANGO_ENV": "staging"}, "DJANGO_ENV='staging'"),
        ({"DEBUG": "maybe"}, "DEBUG='maybe' is not a boolean"),
        ({"DATABASE_URL": "mysql://u:p@h/db"}, "must point to PostgreSQL"),
        ({"CONN_MAX_AGE": "soon"}, "CONN_MAX_AGE='soon' is not a whole number"),
    ],
)
def test_settings__bad_environment_is_refused_clearly(env: dict[str, str], message: str) -> None:
    result = import_settings(**env)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_settings__production_with_required_values_starts() -> None:
    result = import_settings(
        DJANGO_ENV="production",
        SECRET_KEY="s" * 50,
        ALLOWED_HOSTS="example.com",
        DATABASE_URL="postgres://app:secret@db:5432/site",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.postgresql", "False"]
