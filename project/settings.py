"""Settings for the project, read from the environment.

Every value has a safe development default, so a fresh clone runs with nothing set.
`DJANGO_ENV=production` turns the defaults strict: `DEBUG` must be off and `SECRET_KEY` and
`ALLOWED_HOSTS` must be given. Importing this module has no side effects: the embedded
PostgreSQL server starts on first connection (see `project.embedded_postgres`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from jobs.conf import JobsSettings
from jobs.postgres_values import PG_INT_MIN

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no).")


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a whole number.") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={raw!r} must be at least {minimum}.")
    return value


def env_seconds(name: str, default: float | None) -> float | None:
    """A number of seconds above 0 (`1.5`), or `none` for none."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    if raw.strip().lower() == "none":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number of seconds.") from None
    if not 0 < value < float("inf"):
        raise ImproperlyConfigured(f"{name}={raw!r} must be a number of seconds above 0.")
    return value


def env_json(name: str, default: Any) -> Any:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return json.loads(raw)
    except ValueError as error:
        raise ImproperlyConfigured(f"{name}={raw!r} is not JSON: {error}.") from None


def env_proxy_ssl_header(name: str) -> tuple[str, str] | None:
    """`X-Forwarded-Proto` (the proxy sends `https`) or `Name: value` (`X-Forwarded-Ssl: on`),
    as Django's SECURE_PROXY_SSL_HEADER: ("HTTP_X_FORWARDED_PROTO", "https")."""
    raw = os.environ.get(name, "")
    if raw.strip() == "":
        return None
    header, _, value = raw.partition(":")
    header, value = header.strip(), value.strip() or "https"
    # Hyphens only: servers drop headers with underscores, and Django's META spells both
    # alike, so `HTTP_X_FORWARDED_PROTO` here is a mistake worth naming.
    if not re.fullmatch(r"[A-Za-z0-9]+(-[A-Za-z0-9]+)*", header) or not re.fullmatch(
        r"[!-~]+", value
    ):
        raise ImproperlyConfigured(
            f"{name}={raw!r}: expected the header your proxy sets, as it is sent: "
            "'X-Forwarded-Proto' (its value then 'https') or 'Name: value' "
            "('X-Forwarded-Ssl: on')."
        )
    return f"HTTP_{header.upper().replace('-', '_')}", value


# Keys that are public, in this repository or its history: whoever knows the key can forge
# sessions (log in as anyone) and signed values. Production refuses them, and every key
# Django's `check --deploy` calls weak (security.W009: shorter than 50 characters, fewer
# than 5 distinct ones, or Django's "django-insecure-" prefix of generated examples).
DEVELOPMENT_SECRET_KEY = "django-insecure-development-key-never-use-in-production"
PUBLISHED_SECRET_KEYS = frozenset(
    {
        DEVELOPMENT_SECRET_KEY,
        "compose-demo-secret-key-change-me-0123456789abcdef",  # compose.yaml's old fallback
        "collectstatic-only",  # the Dockerfile's build step, before it drew a random key
        "CHANGE-ME-to-a-long-random-string",  # deploy/workers.env.example
    }
)


def secret_key_problem(key: str) -> str | None:
    """Why `key` must not sign anything in production, or None."""
    if key in PUBLISHED_SECRET_KEYS:
        return "it is published in this project's repository"
    if key.startswith("django-insecure-"):
        return "it has Django's 'django-insecure-' prefix of keys made for development"
    if len(key) < 50 or len(set(key)) < 5:
        return "it is shorter than 50 characters or has fewer than 5 different ones"
    return None


ENVIRONMENT = os.environ.get("DJANGO_ENV", "development").strip().lower()
if ENVIRONMENT not in {"development", "production"}:
    raise ImproperlyConfigured(
        f"DJANGO_ENV={ENVIRONMENT!r}: expected 'development' (default) or 'production'."
    )
PRODUCTION = ENVIRONMENT == "production"

DEBUG = env_bool("DEBUG", default=not PRODUCTION)
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("DEBUG must be off when DJANGO_ENV=production.")

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY must be set when DJANGO_ENV=production.")
    # Development only: a fixed key keeps sessions valid across restarts.
    SECRET_KEY = DEVELOPMENT_SECRET_KEY
if PRODUCTION and (_key_problem := secret_key_problem(SECRET_KEY)):
    raise ImproperlyConfigured(
        f"SECRET_KEY is refused when DJANGO_ENV=production: {_key_problem}. Generate one with "
        "python3 -c 'import secrets; print(secrets.token_urlsafe(50))'."
    )

ALLOWED_HOSTS = env_list(
    "ALLOWED_HOSTS", [] if PRODUCTION else ["localhost", "127.0.0.1", "[::1]", "testserver"]
)
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DJANGO_ENV=production.")
if PRODUCTION and "*" in ALLOWED_HOSTS:
    # Any Host header would do: links built from it (password resets, the API's status_url)
    # could point to another site. `.example.com` covers a domain's subdomains.
    raise ImproperlyConfigured(
        "ALLOWED_HOSTS must not contain '*' when DJANGO_ENV=production: name the site's hosts."
    )
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # procrastinate's app comes before `jobs`, whose migrations depend on its tables.
    "procrastinate.contrib.django",
    "jobs",
    # This project's benchmarks (manage.py bench_api, bench_admin, bench_jobs); a site that
    # installs `jobs` leaves it out. Its tasks load only in the benchmark's own processes.
    "bench",
    # This site's own parts, which use `jobs`: the example site, and the project itself
    # (its commands run_site and stop_postgres).
    "example",
    "project",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves the admin's and the pages' static files from the project itself.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "project.wsgi.application"
ASGI_APPLICATION = "project.asgi.application"

# --- Database -------------------------------------------------------------------------
# With DATABASE_URL (postgres://user:password@host:5432/name), that server is used and
# nothing embedded starts. Without it, an embedded PostgreSQL 18 runs from the folder
# EMBEDDED_POSTGRES_DIR (default: .embedded-postgres/ in the project, ignored by git).
DATABASE_URL = os.environ.get("DATABASE_URL", "").strip()
CONN_MAX_AGE = env_int("CONN_MAX_AGE", 0)
if DATABASE_URL:
    try:
        _database = dj_database_url.parse(
            DATABASE_URL, conn_max_age=CONN_MAX_AGE, conn_health_checks=CONN_MAX_AGE > 0
        )
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from exc
    if _database.get("ENGINE") != "django.db.backends.postgresql":
        raise ImproperlyConfigured(
            "DATABASE_URL must point to PostgreSQL (postgres://...): procrastinate needs it."
        )
    DATABASES: dict[str, dict[str, Any]] = {"default": dict(_database)}
elif PRODUCTION:
    raise ImproperlyConfigured(
        "DATABASE_URL must be set when DJANGO_ENV=production (the embedded PostgreSQL is "
        "for development and tests)."
    )
else:
    EMBEDDED_POSTGRES_DIR = Path(
        os.environ.get("EMBEDDED_POSTGRES_DIR", BASE_DIR / ".embedded-postgres" / "data")
    )
    DATABASES = {
        "default": {
            "ENGINE": "project.embedded_postgres",
            "NAME": "postgres",
            "USER": "postgres",
            "CONN_MAX_AGE": CONN_MAX_AGE,
            "CONN_HEALTH_CHECKS": CONN_MAX_AGE > 0,
            "EMBEDDED_DATA_DIR": str(EMBEDDED_POSTGRES_DIR),
        }
    }

# Under an ASGI server each request's sync code runs on a fresh thread, so per-thread
# persistent connections (CONN_MAX_AGE) are not reused; a connection pool (psycopg_pool,
# Django's "pool" option) is. On by default in production; DATABASE_POOL=0/1 overrides.
# The pool replaces CONN_MAX_AGE, which must then stay 0.
DATABASE_POOL = env_bool("DATABASE_POOL", default=PRODUCTION)
if DATABASE_POOL:
    if CONN_MAX_AGE:
        raise ImproperlyConfigured("Set CONN_MAX_AGE=0 when DATABASE_POOL is on.")
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env_int("DATABASE_POOL_MIN_SIZE", 1),
        "max_size": env_int("DATABASE_POOL_MAX_SIZE", 10, minimum=1),
        "timeout": env_int("DATABASE_POOL_TIMEOUT", 10, minimum=1),
    }
    # Django then gives the pool psycopg's check (an empty query before handing a connection
    # out). After a database restart every idle pooled connection is dead, and without it
    # each one fails the request or job that gets it next.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- procrastinate ----------------------------------------------------------------------
# procrastinate's job, event and worker models refuse ORM writes: changes go through
# its API (app.job_manager), which keeps its triggers and events consistent.
PROCRASTINATE_READONLY_MODELS = True
# Defaults for `manage.py procrastinate worker`; command-line flags override them.
PROCRASTINATE_WORKER_DEFAULTS = {
    # LISTEN/NOTIFY wakes the worker as soon as a job is deferred; polling is only the
    # fallback for scheduled jobs, missed notifications and rate limits, every second (the
    # jobs app's default, jobs/worker.py: set fetch_job_polling_interval here to change it).
    "listen_notify": True,
    # Jobs that are still running at shutdown get this long to finish.
    "shutdown_graceful_timeout": 30.0,
}
PROCRASTINATE_PERIODIC_DEFAULTS: dict[str, object] = {}
# Extra task modules besides each app's tasks.py (comma-separated dotted paths); the test
# suite uses it to give the worker processes it starts its own test tasks.
PROCRASTINATE_IMPORT_PATHS = env_list("PROCRASTINATE_IMPORT_PATHS", [])
# No PROCRASTINATE_ON_APP_READY: installing `jobs` adds its result recorder and its
# restart-proof worker connector to procrastinate's app (jobs/worker.py).

# Django's task API (`from django.tasks import task`) on the same queue: `.enqueue()` defers
# a procrastinate job in the caller's transaction, and the workers run it (jobs/django_tasks.py).
# QUEUES lists the queues Django tasks may use; OPTIONS["retry"] is the retry policy of
# tasks that set none (procrastinate's: a number of attempts, True, or a RetryStrategy).
TASKS = {
    "default": {
        "BACKEND": "jobs.django_tasks.ProcrastinateBackend",
        # The example's Django tasks use its comments and reports queues; bench_jobs'
        # no-op Django tasks use the benchmark's queue.
        "QUEUES": ["default", "comments", "reports", "bench"],
        "OPTIONS": {},
    }
}

# --- The example site ---------------------------------------------------------------------
# The example pages (/, /activity/, /notifications/, /reports/, /comments/, /imports/) mail
# any address a user types, so they need a login and the example's permissions, and exist
# only while this is on: by default in development, not in production (EXAMPLE_PAGES=on
# switches them on there). Off, they answer 404.
EXAMPLE_PAGES = env_bool("EXAMPLE_PAGES", default=not PRODUCTION)
# Comments (user content with a lifetime) are deleted this many hours after creation. The
# environment's old name, JOBS_COMMENT_LIFETIME_HOURS, is still read when the new one is unset.
EXAMPLE_COMMENT_LIFETIME_HOURS = env_int(
    "EXAMPLE_COMMENT_LIFETIME_HOURS",
    env_int("JOBS_COMMENT_LIFETIME_HOURS", 24, minimum=1),
    minimum=1,
)

# --- The jobs app --------------------------------------------------------------------------
# Every JOBS_* setting has its default and its check in jobs/conf.py (README, "Settings of the
# jobs app"); a bad value stops `manage.py check`, which every command runs first. This
# project lets an environment variable of the same name replace a default.

# A job's result row is written when it ends; one still running after this many
# milliseconds also gets a "running" row (worker, start) meanwhile.
JOBS_RESULT_RUNNING_AFTER_MS = env_int(
    "JOBS_RESULT_RUNNING_AFTER_MS", JobsSettings.JOBS_RESULT_RUNNING_AFTER_MS.default
)
JOBS_API_MAX_BODY_BYTES = env_int(
    "JOBS_API_MAX_BODY_BYTES", JobsSettings.JOBS_API_MAX_BODY_BYTES.default
)
JOBS_API_MAX_SCHEDULE_DAYS = env_int(
    "JOBS_API_MAX_SCHEDULE_DAYS", JobsSettings.JOBS_API_MAX_SCHEDULE_DAYS.default
)
JOBS_API_MAX_PRIORITY = env_int(
    "JOBS_API_MAX_PRIORITY", JobsSettings.JOBS_API_MAX_PRIORITY.default, minimum=PG_INT_MIN
)
# The most jobs one request to POST /api/batches/ may defer.
JOBS_API_MAX_BATCH_JOBS = env_int(
    "JOBS_API_MAX_BATCH_JOBS", JobsSettings.JOBS_API_MAX_BATCH_JOBS.default, minimum=1
)
JOBS_EXPIRED_TOKEN_KEEP_DAYS = env_int(
    "JOBS_EXPIRED_TOKEN_KEEP_DAYS", JobsSettings.JOBS_EXPIRED_TOKEN_KEEP_DAYS.default
)
# Retention of finished jobs, in hours, per final status (JOBS_RETENTION_SUCCEEDED_HOURS,
# ..._FAILED_..., ..._CANCELLED_..., ..._ABORTED_...); 0 keeps that status forever.
JOBS_RETENTION_HOURS = {
    status: env_int(f"JOBS_RETENTION_{status.upper()}_HOURS", hours)
    for status, hours in JobsSettings.JOBS_RETENTION_HOURS.default.items()
}
JOBS_STALLED_WORKER_SECONDS = env_int(
    "JOBS_STALLED_WORKER_SECONDS", JobsSettings.JOBS_STALLED_WORKER_SECONDS.default
)
JOBS_BACKGROUND_COMMANDS = env_list(
    "JOBS_BACKGROUND_COMMANDS",
    [*JobsSettings.JOBS_BACKGROUND_COMMANDS.default, "delete_expired_comments"],
)
JOBS_DASHBOARD_HOURS = env_int("JOBS_DASHBOARD_HOURS", JobsSettings.JOBS_DASHBOARD_HOURS.default)
JOBS_DASHBOARD_REFRESH_SECONDS = env_int(
    "JOBS_DASHBOARD_REFRESH_SECONDS", JobsSettings.JOBS_DASHBOARD_REFRESH_SECONDS.default
)
# `run_nightly_maintenance`'s steps: the app's own, with the example's delete_expired_comments
# after prune_jobs.
_NIGHTLY = list(JobsSettings.JOBS_NIGHTLY_COMMANDS.default)
_NIGHTLY.insert(_NIGHTLY.index("prune_jobs") + 1, "delete_expired_comments")
JOBS_NIGHTLY_COMMANDS = env_list("JOBS_NIGHTLY_COMMANDS", _NIGHTLY)
# Bearer token Prometheus sends to /metrics/; unset, only logged-in staff with the view
# permission on jobs may read the metrics.
JOBS_METRICS_TOKEN = os.environ.get("JOBS_METRICS_TOKEN", "").strip()
JOBS_METRICS_WINDOW_SECONDS = env_int(
    "JOBS_METRICS_WINDOW_SECONDS", JobsSettings.JOBS_METRICS_WINDOW_SECONDS.default
)
# Stored schedules: ticks due within this many seconds all run (a late scheduler leaves no
# gap); older ones were missed by an outage and run once (catch_up) or not at all.
JOBS_SCHEDULE_MISSED_AFTER_SECONDS = env_int(
    "JOBS_SCHEDULE_MISSED_AFTER_SECONDS", JobsSettings.JOBS_SCHEDULE_MISSED_AFTER_SECONDS.default
)
# Time limit, in seconds, of every task that declares none (unset or "none": no limit); a
# sync task still running this many seconds after being told to stop gets its worker process
# replaced (README, "Time limits").
JOBS_TIME_LIMIT = env_seconds("JOBS_TIME_LIMIT", JobsSettings.JOBS_TIME_LIMIT.default)
JOBS_TIME_LIMIT_GRACE_SECONDS = env_seconds(
    "JOBS_TIME_LIMIT_GRACE_SECONDS", JobsSettings.JOBS_TIME_LIMIT_GRACE_SECONDS.default
)
# Concurrency and rate limits per queue, as JSON: {"billing": {"concurrency": 5},
# "mail": {"rate": 100, "per": 60}} (README, "Concurrency and rate limits").
JOBS_QUEUE_LIMITS = env_json("JOBS_QUEUE_LIMITS", JobsSettings.JOBS_QUEUE_LIMITS.default)
# Off: workers fetch with procrastinate's own function, which knows neither limits nor
# paused queues (for comparing the two; bench_jobs does).
JOBS_FETCH_WITH_LIMITS = env_bool(
    "JOBS_FETCH_WITH_LIMITS", JobsSettings.JOBS_FETCH_WITH_LIMITS.default
)
# Off: workers fetch one job per round trip instead of one per free slot (for comparing
# the two).
JOBS_FETCH_MANY = env_bool("JOBS_FETCH_MANY", JobsSettings.JOBS_FETCH_MANY.default)
# Off: each job's end is recorded by a statement of its own instead of with the ends of the
# jobs that finish with it (for comparing the two).
JOBS_GATHER_JOB_ENDS = env_bool("JOBS_GATHER_JOB_ENDS", JobsSettings.JOBS_GATHER_JOB_ENDS.default)

# --- Auth, i18n, static -----------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Production serves what `collectstatic` gathered into STATIC_ROOT (done in the image);
# development and tests serve straight from the apps' static folders.
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles")) if PRODUCTION else None
WHITENOISE_USE_FINDERS = not PRODUCTION
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Email (the notification task sends mail) -------------------------------------------
# EMAIL_BACKEND picks the backend (console by default: mail is printed by the worker);
# the SMTP backend reads EMAIL_HOST, EMAIL_PORT, EMAIL_HOST_USER, EMAIL_HOST_PASSWORD,
# EMAIL_USE_TLS and EMAIL_TIMEOUT, the file backend EMAIL_FILE_PATH.
_mail_backend = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
_mail_options: dict[str, object] = {}
if _mail_backend.endswith("smtp.EmailBackend"):
    _mail_options = {
        "host": os.environ.get("EMAIL_HOST", "localhost"),
        "port": env_int("EMAIL_PORT", 25, minimum=1),
        "username": os.environ.get("EMAIL_HOST_USER", ""),
        "password": os.environ.get("EMAIL_HOST_PASSWORD", ""),
        "use_tls": env_bool("EMAIL_USE_TLS", False),
        "timeout": env_int("EMAIL_TIMEOUT", 10, minimum=1),
    }
elif _mail_backend.endswith("filebased.EmailBackend"):
    _mail_options = {
        "file_path": os.environ.get("EMAIL_FILE_PATH", str(BASE_DIR / "artifacts" / "mail"))
    }
MAILERS = {"default": {"BACKEND": _mail_backend, "OPTIONS": _mail_options}}
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "jobs@localhost")

# --- HTTPS and cookies (README, "Security") ---------------------------------------------
# Strict in production, off in development (plain HTTP); each can be switched either way.
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", PRODUCTION)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", PRODUCTION)
SECURE_CONTENT_TYPE_NOSNIFF = True
# Plain-HTTP requests are redirected to HTTPS, except the probes of load balancers and
# Prometheus, which reach a web server directly on its private address.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", PRODUCTION)
SECURE_REDIRECT_EXEMPT = [r"^health/$", r"^metrics/$"]
# Behind a proxy that ends TLS, the header by which it says the request came over HTTPS;
# without it Django sees every request as plain HTTP and SECURE_SSL_REDIRECT loops.
SECURE_PROXY_SSL_HEADER = env_proxy_ssl_header("SECURE_PROXY_SSL_HEADER")
# HSTS: browsers then refuse plain HTTP to the site for this long, whatever happens later;
# off unless set (start with an hour, then a year).
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
if (SECURE_HSTS_INCLUDE_SUBDOMAINS or SECURE_HSTS_PRELOAD) and not SECURE_HSTS_SECONDS:
    raise ImproperlyConfigured(
        "SECURE_HSTS_INCLUDE_SUBDOMAINS and SECURE_HSTS_PRELOAD do nothing without "
        "SECURE_HSTS_SECONDS: set it too."
    )
# Browsers' preload list takes only a year or more, subdomains included.
if SECURE_HSTS_PRELOAD and (SECURE_HSTS_SECONDS < 31_536_000 or not SECURE_HSTS_INCLUDE_SUBDOMAINS):
    raise ImproperlyConfigured(
        "SECURE_HSTS_PRELOAD needs SECURE_HSTS_SECONDS of at least 31536000 (a year) and "
        "SECURE_HSTS_INCLUDE_SUBDOMAINS on: the browsers' preload list takes nothing less."
    )

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "filters": {
        # procrastinate announces each periodic schedule at every start of every process.
        "no_periodic_registration": {
            "()": "django.utils.log.CallbackFilter",
            "callback": lambda record: getattr(record, "action", "") != "registering_periodic_task",
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["no_periodic_registration"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "procrastinate": {"level": os.environ.get("PROCRASTINATE_LOG_LEVEL", "INFO")},
        # It announces every task module it loads, at each start of every process.
        "procrastinate.blueprints": {"level": "WARNING"},
        "embedded_postgres": {"level": "WARNING"},
    },
}
