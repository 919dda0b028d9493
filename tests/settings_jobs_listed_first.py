"""The project's settings with `jobs` first in INSTALLED_APPS, before procrastinate's app:
JobsConfig.ready() then runs before procrastinate creates its app (tests/test_conf.py)."""

from project.settings import *  # noqa: F403
from project.settings import INSTALLED_APPS

INSTALLED_APPS = ["jobs", *(name for name in INSTALLED_APPS if name != "jobs")]
