"""CI cannot go green with the browser tests or the Celery + Redis ones left out (.ci/run,
the `browser` and `redis_url` fixtures).

`.ci/run` is run with stand-ins on PATH: an `apt-get` that fails or installs nothing, and a
`python3` that only notes the commands it was given, so nothing real is installed or run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

CI_RUN = Path(settings.BASE_DIR) / ".ci" / "run"


def stub(folder: Path, name: str, script: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)


def run_ci(
    tmp_path: Path, *, apt_get: str | None, ci: bool, installed: tuple[str, ...] = ()
) -> tuple[int, str, list[str]]:
    """Run .ci/run with a PATH of stand-ins (and of the tools `installed`, which do
    nothing); return its exit code, its stderr and the commands it gave `python3` (the
    linters and the tests it would have run)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    calls = tmp_path / "python3-calls"
    stub(folder, "python3", f'echo "$*" >> "{calls}"')
    for name in installed:
        stub(folder, name, "exit 0")
    if apt_get is not None:
        stub(folder, "apt-get", apt_get)
    dirname = shutil.which("dirname")
    assert dirname is not None
    (folder / "dirname").symlink_to(dirname)
    env = {"PATH": str(folder), "HOME": str(tmp_path)}
    if ci:
        env["CI"] = "true"
    bash = shutil.which("bash")
    assert bash is not None
    completed = subprocess.run(
        [bash, str(CI_RUN)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    made = calls.read_text().splitlines() if calls.exists() else []
    return completed.returncode, completed.stderr, made


def test_ci_run__stops_when_the_browser_install_fails(tmp_path: Path) -> None:
    code, stderr, commands = run_ci(tmp_path, apt_get='echo "E: no network" >&2; exit 100', ci=True)

    assert code != 0
    assert "E: no network" in stderr
    assert commands == []  # neither the linters nor the tests ran


def test_ci_run__stops_when_the_install_leaves_no_browser(tmp_path: Path) -> None:
    code, stderr, commands = run_ci(tmp_path, apt_get="exit 0", ci=True)

    assert code == 1
    assert "Chromium and chromedriver are missing" in stderr
    assert commands == []


def test_ci_run__stops_without_a_browser_nor_apt_get(tmp_path: Path) -> None:
    code, stderr, commands = run_ci(tmp_path, apt_get=None, ci=True)

    assert code == 1
    assert "Chromium and chromedriver are missing" in stderr
    assert commands == []


def test_ci_run__outside_ci_installs_nothing_and_runs_the_checks(tmp_path: Path) -> None:
    code, _, commands = run_ci(tmp_path, apt_get="exit 100", ci=False)

    assert code == 0
    assert commands == ["scripts/dev.py check", "scripts/dev.py test"]


BROWSER = ("chromium", "chromedriver")


def installing_apt_get(tmp_path: Path) -> str:
    """An apt-get stand-in that notes its arguments in `tmp_path/apt-calls` and "installs"
    the Debian packages it is asked for (a stand-in for each of their commands)."""
    chmod = shutil.which("chmod")
    commands = {
        "chromium": "chromium",
        "chromium-driver": "chromedriver",
        "redis-server": "redis-server",
    }
    installs = "\n".join(
        f'    {package}) printf "#!/bin/sh\\n" > "{tmp_path / "bin" / command}"; '
        f'{chmod} 755 "{tmp_path / "bin" / command}";;'
        for package, command in commands.items()
    )
    return (
        f'echo "$*" >> "{tmp_path / "apt-calls"}"\n'
        f'for package in "$@"; do\n  case "$package" in\n{installs}\n  esac\ndone'
    )


def test_ci_run__installs_redis_server_under_ci(tmp_path: Path) -> None:
    code, stderr, commands = run_ci(
        tmp_path, apt_get=installing_apt_get(tmp_path), ci=True, installed=BROWSER
    )

    assert (code, stderr) == (0, "")
    assert (tmp_path / "apt-calls").read_text().splitlines() == [
        "update -qq",
        "install -y -qq redis-server",
    ]
    assert commands == ["scripts/dev.py check", "scripts/dev.py test"]


def test_ci_run__installs_the_browser_and_redis_server_with_one_update(tmp_path: Path) -> None:
    code, _, commands = run_ci(tmp_path, apt_get=installing_apt_get(tmp_path), ci=True)

    assert code == 0
    assert (tmp_path / "apt-calls").read_text().splitlines() == [
        "update -qq",
        "install -y -qq chromium chromium-driver",
        "install -y -qq redis-server",
    ]
    assert commands == ["scripts/dev.py check", "scripts/dev.py test"]


def test_ci_run__stops_when_the_install_leaves_no_redis_server(tmp_path: Path) -> None:
    code, stderr, commands = run_ci(tmp_path, apt_get="exit 0", ci=True, installed=BROWSER)

    assert code == 1
    assert "redis-server is missing and could not be installed" in stderr
    assert commands == []


def test_ci_run__under_ci_installs_nothing_already_there(tmp_path: Path) -> None:
    code, _, commands = run_ci(
        tmp_path, apt_get="exit 100", ci=True, installed=(*BROWSER, "redis-server")
    )

    assert code == 0
    assert commands == ["scripts/dev.py check", "scripts/dev.py test"]


def test_browser_fixture__fails_under_ci_without_chromium(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no chromium, no chromedriver
    monkeypatch.setenv("CI", "true")

    # Caught either way, so that a skip shows as this test's failure, not as a skip.
    with pytest.raises((pytest.fail.Exception, pytest.skip.Exception)) as outcome:
        request.getfixturevalue("browser")

    assert outcome.type is pytest.fail.Exception
    assert "CI=true requires the browser tests" in str(outcome.value)


def test_browser_fixture__skips_outside_ci_without_chromium(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)

    with pytest.raises(pytest.skip.Exception, match="apt install chromium chromium-driver"):
        request.getfixturevalue("browser")


def test_ci_run__is_executable() -> None:
    assert os.access(CI_RUN, os.X_OK)
