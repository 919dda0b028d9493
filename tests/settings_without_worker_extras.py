"""The project's settings with the worker extras of `jobs` switched off (tests/test_conf.py)."""

from project.settings import *  # noqa: F403

JOBS_INSTALL_WORKER_EXTRAS = False
