"""Settings of the bare site: a Django site as someone who adds `jobs` to their own writes it.

Django's contrib apps, procrastinate's app, `jobs` and one app of the site's own; no setting
of `jobs` (every one has its default in `jobs`). tests/test_bare_site.py runs it, in
processes of its own, against a database of its own on the tests' PostgreSQL server, and
checks that README's "Add the job system to your own site" says what this file does.
"""

import os

SECRET_KEY = "django-insecure-bare-site-of-the-tests"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "procrastinate.contrib.django",
    "jobs",
    "tests.bare_site.greetings",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "tests.bare_site.urls"

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

# The server, user and password come from libpq's own variables (PGHOST, PGPORT, PGUSER,
# PGPASSWORD), which the tests set to their PostgreSQL server's; psycopg reads them itself.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("PGDATABASE", "bare_site"),
    }
}

# Django's task API on the job system, as README's "Add the job system to your own site" says.
TASKS = {
    "default": {
        "BACKEND": "jobs.django_tasks.ProcrastinateBackend",
        "QUEUES": ["default"],  # the queues your Django tasks may use
        "OPTIONS": {},  # {"retry": ...}: the retry policy of tasks that set none
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
