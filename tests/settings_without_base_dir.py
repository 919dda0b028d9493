"""The project's settings without BASE_DIR, a setting of this project that a site installing
`jobs` need not have (tests/test_commands.py: run_workers runs without it)."""

from project.settings import *  # noqa: F403

del BASE_DIR  # noqa: F821
