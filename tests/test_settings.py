"""Settings come from the environment; production refuses unsafe values."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings

from project import settings as project_settings

SHOW_DATABASE = (
    "from django.conf import settings; "
    "print(settings.DATABASES['default']['ENGINE'], settings.DEBUG)"
)
# A key production accepts.
GOOD_KEY = "k3y-for-the-tests-only-" + "abcdefghijklmnopqrstuvwxyz0123456789"
# Variables the settings read that the environment of the test run may hold.
SETTINGS_VARIABLES = re.compile(
    r"DATABASE_URL|DJANGO_ENV|DEBUG|SECRET_KEY|ALLOWED_HOSTS|CSRF_TRUSTED_ORIGINS"
    r"|SECURE_.*|.*_COOKIE_SECURE|EMAIL_.*|JOBS_METRICS_TOKEN"
)


def run_python(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """Python in the project folder, with the given settings variables and no others."""
    environment = {
        key: value for key, value in os.environ.items() if not SETTINGS_VARIABLES.fullmatch(key)
    }
    environment.update(env, DJANGO_SETTINGS_MODULE="project.settings")
    return subprocess.run(
        [sys.executable, *args],
        cwd=settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )


def import_settings(code: str = SHOW_DATABASE, **env: str) -> subprocess.CompletedProcess[str]:
    return run_python(["-c", code], **env)


PRODUCTION = {
    "DJANGO_ENV": "production",
    "SECRET_KEY": GOOD_KEY,
    "ALLOWED_HOSTS": "example.com",
    "DATABASE_URL": "postgres://app:secret@db:5432/site",
}


def readme_production_environment() -> dict[str, str]:
    """The variables of README's "Production settings" block, with what it puts in angle
    brackets (keys, passwords) filled in by random values, as an operator would."""
    readme = (Path(settings.BASE_DIR) / "README.md").read_text()
    section = readme.split("\n### Production settings\n", 1)[1]
    block = re.search(r"```ini\n(.*?)```", section, re.DOTALL)
    assert block is not None, "README's production settings have no ```ini block"
    lines = [line for line in block[1].splitlines() if line.strip() and not line.startswith("#")]
    return {
        name: re.sub(r"<[^>]+>", lambda _: secrets.token_urlsafe(50), value)
        for name, value in (line.split("=", 1) for line in lines)
    }


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
            {"DJANGO_ENV": "production", "SECRET_KEY": GOOD_KEY, "DEBUG": "1"},
            "DEBUG must be off",
        ),
        ({"DJANGO_ENV": "production", "SECRET_KEY": GOOD_KEY}, "ALLOWED_HOSTS must be set"),
        (
            {"DJANGO_ENV": "production", "SECRET_KEY": GOOD_KEY, "ALLOWED_HOSTS": "example.com"},
            "DATABASE_URL must be set",
        ),
        # Keys anyone can read: compose.yaml's old fallback, the development key.
        (
            {**PRODUCTION, "SECRET_KEY": "compose-demo-secret-key-change-me-0123456789abcdef"},
            "SECRET_KEY is refused when DJANGO_ENV=production: it is published",
        ),
        (
            {**PRODUCTION, "SECRET_KEY": project_settings.DEVELOPMENT_SECRET_KEY},
            "SECRET_KEY is refused when DJANGO_ENV=production: it is published",
        ),
        ({**PRODUCTION, "SECRET_KEY": "s" * 50}, "fewer than 5 different ones"),
        ({**PRODUCTION, "ALLOWED_HOSTS": "*"}, "ALLOWED_HOSTS must not contain '*'"),
        ({**PRODUCTION, "ALLOWED_HOSTS": "example.com, *"}, "ALLOWED_HOSTS must not contain '*'"),
        ({"SECURE_HSTS_SECONDS": "a year"}, "SECURE_HSTS_SECONDS='a year' is not a whole number"),
        ({"SECURE_HSTS_SECONDS": "-1"}, "SECURE_HSTS_SECONDS='-1' must be at least 0"),
        ({"SECURE_HSTS_PRELOAD": "yes"}, "do nothing without SECURE_HSTS_SECONDS"),
        (
            {"SECURE_HSTS_SECONDS": "3600", "SECURE_HSTS_PRELOAD": "yes"},
            "SECURE_HSTS_PRELOAD needs SECURE_HSTS_SECONDS of at least 31536000",
        ),
        ({"SECURE_SSL_REDIRECT": "always"}, "SECURE_SSL_REDIRECT='always' is not a boolean"),
        (
            {"SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO"},
            "SECURE_PROXY_SSL_HEADER='HTTP_X_FORWARDED_PROTO': expected the header",
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
    result = import_settings(**PRODUCTION)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.postgresql", "False"]


def test_settings__production_is_https_only_by_default() -> None:
    result = import_settings(
        "from django.conf import settings as s; print(s.SESSION_COOKIE_SECURE, "
        "s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS)",
        **PRODUCTION,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "True", "0"]


def test_settings__check_deploy_is_clean_with_the_readme_production_variables() -> None:
    environment = readme_production_environment()
    assert environment["DJANGO_ENV"] == "production"

    result = run_python(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"], **environment
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("X-Forwarded-Proto", ("HTTP_X_FORWARDED_PROTO", "https")),
        ("  x-forwarded-proto  ", ("HTTP_X_FORWARDED_PROTO", "https")),
        ("X-Forwarded-Ssl: on", ("HTTP_X_FORWARDED_SSL", "on")),
        ("", None),
    ],
)
def test_env_proxy_ssl_header__reads_the_header_as_the_proxy_sends_it(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: tuple[str, str] | None
) -> None:
    monkeypatch.setenv("SECURE_PROXY_SSL_HEADER", raw)

    assert project_settings.env_proxy_ssl_header("SECURE_PROXY_SSL_HEADER") == expected


@pytest.mark.parametrize(
    "raw", ["X_Forwarded_Proto", "X-Forwarded Proto", "X-Forwarded-Proto: on air", ": https"]
)
def test_env_proxy_ssl_header__refuses_what_no_proxy_sends(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("SECURE_PROXY_SSL_HEADER", raw)

    with pytest.raises(ImproperlyConfigured, match="SECURE_PROXY_SSL_HEADER="):
        project_settings.env_proxy_ssl_header("SECURE_PROXY_SSL_HEADER")


@pytest.mark.django_db
def test_settings__proxy_header_ends_the_redirect_and_probes_are_exempt(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto")
    header = project_settings.env_proxy_ssl_header("SECURE_PROXY_SSL_HEADER")

    # The production values, in this process: the client builds its middleware at the
    # first request, so SecurityMiddleware reads them.
    with override_settings(SECURE_SSL_REDIRECT=True, SECURE_PROXY_SSL_HEADER=header):
        plain = client.get("/dashboard/")
        proxied = client.get("/dashboard/", headers={"X-Forwarded-Proto": "https"})
        health = client.get("/health/")
        metrics = client.get("/metrics/")

    assert plain.status_code == 301
    assert plain["Location"] == "https://testserver/dashboard/"
    assert proxied.status_code == 302  # the login page: the request counts as HTTPS
    assert proxied["Location"].startswith("/admin/login/")
    assert health.status_code in {200, 503}
    assert metrics.status_code == 401


@pytest.mark.parametrize(
    ("key", "accepted"),
    [
        (GOOD_KEY, True),
        ("django-insecure-" + GOOD_KEY, False),
        (GOOD_KEY[:49], False),
        ("ab" * 40, False),
        *((key, False) for key in sorted(project_settings.PUBLISHED_SECRET_KEYS)),
    ],
)
def test_secret_key_problem__refuses_weak_and_published_keys(key: str, accepted: bool) -> None:
    assert (project_settings.secret_key_problem(key) is None) is accepted


def test_settings__jobs_variables_replace_the_app_defaults() -> None:
    result = import_settings(
        "from django.conf import settings as s; "
        "print(s.JOBS_DASHBOARD_HOURS, s.JOBS_RETENTION_HOURS, s.JOBS_BACKGROUND_COMMANDS)",
        JOBS_DASHBOARD_HOURS="24",
        JOBS_RETENTION_FAILED_HOURS="2160",
        JOBS_BACKGROUND_COMMANDS="prune_jobs, recover_stalled_jobs",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "24 {'succeeded': 168, 'failed': 2160, 'cancelled': 168, 'aborted': 720} "
        "['prune_jobs', 'recover_stalled_jobs']"
    )


def test_settings__jobs_variable_the_app_refuses_is_named_by_check() -> None:
    result = run_python(["manage.py", "check"], JOBS_DASHBOARD_HOURS="500")

    assert result.returncode != 0
    assert "JOBS_DASHBOARD_HOURS = 500 is refused: it is above 168." in result.stderr
    assert "Expected a whole number of hours from 1 to 168; the default is 3." in result.stderr
