#!/usr/bin/env python3
"""One entry point for people and CI: install what the project needs, then run it.

    python3 scripts/dev.py up      # embedded PostgreSQL, migrations, web server and worker
    python3 scripts/dev.py test    # the whole test suite (extra arguments go to pytest)
    python3 scripts/dev.py check   # ruff and mypy
    python3 scripts/dev.py manage ARGS...   # any manage.py command inside the environment

It needs only a Python 3.12+ interpreter. If `uv` is not installed, it is installed
into `.bootstrap/` (a private virtual environment, ignored by git), and `uv sync --locked`
builds `.venv/` from the committed `uv.lock`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP = ROOT / ".bootstrap"
# The uv release this project is tested with; any recent uv reads the same lock file.
UV_REQUIREMENT = "uv>=0.5,<1"


def _bin(env_dir: Path, name: str) -> Path:
    scripts = "Scripts" if os.name == "nt" else "bin"
    suffix = ".exe" if os.name == "nt" else ""
    return env_dir / scripts / f"{name}{suffix}"


def _works(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, check=False).returncode == 0
    except OSError:
        return False


def find_uv() -> str:
    """Return a working uv executable, installing one privately if needed."""
    private_uv = _bin(BOOTSTRAP, "uv")
    if private_uv.exists() and _works([str(private_uv), "--version"]):
        return str(private_uv)
    # A `uv` on PATH may be a shim (pyenv, asdf) that fails for this project's Python,
    # so it is only used if it actually answers.
    if _works(["uv", "--version"]):
        return "uv"
    print(f"dev.py: installing uv into {BOOTSTRAP.relative_to(ROOT)}/ ...", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(BOOTSTRAP)
    subprocess.run(
        [str(_bin(BOOTSTRAP, "python")), "-m", "pip", "install", "--quiet", UV_REQUIREMENT],
        check=True,
    )
    return str(private_uv)


def sync_environment() -> Path:
    """Create or update `.venv` from `uv.lock`; return its Python."""
    uv = find_uv()
    env = dict(os.environ)
    # Use the interpreter running this script when it matches `.python-version`,
    # so that uv needs no download of its own.
    wanted = (ROOT / ".python-version").read_text().strip()
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    if running == wanted and "UV_PYTHON" not in env:
        env["UV_PYTHON"] = sys.executable
    subprocess.run([uv, "sync", "--locked", "--quiet"], cwd=ROOT, env=env, check=True)
    return _bin(ROOT / ".venv", "python")


def run(python: Path, args: list[str]) -> int:
    """Run the environment's Python with `args`, replacing this process where possible."""
    command = [str(python), *args]
    if os.name == "nt":  # pragma: no cover - no exec on Windows
        return subprocess.call(command, cwd=ROOT)
    os.chdir(ROOT)
    os.execv(command[0], command)
    return 0  # never reached


def main(argv: list[str]) -> int:
    commands = {
        "up": ["manage.py", "run_site"],
        "test": ["-m", "pytest"],
        "check": None,
        "manage": ["manage.py"],
    }
    if not argv or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    name, extra = argv[0], argv[1:]
    python = sync_environment()
    if name == "check":
        checks = [
            [str(python), "-m", "ruff", "check", "."],
            [str(python), "-m", "ruff", "format", "--check", "."],
            [str(python), "-m", "mypy", "."],
        ]
        failed = [c for c in checks if subprocess.call(c, cwd=ROOT) != 0]
        return 1 if failed else 0
    prefix = commands[name]
    assert prefix is not None
    return run(python, [*prefix, *extra])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
