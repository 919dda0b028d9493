"""The project's settings as a site upgraded from before `jobs` installed its worker extras
itself: it still names them as procrastinate's hook (tests/test_conf.py)."""

from project.settings import *  # noqa: F403

PROCRASTINATE_ON_APP_READY = "jobs.worker.on_app_ready"
