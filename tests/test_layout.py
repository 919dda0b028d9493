"""The boundary of the reusable app: `jobs` imports nothing from the rest of this repository
(the project, the benchmarks, the example site), and of third-party code only what it
declares as its runtime dependencies, so that a site can install it alone.

Read from the source with `ast`: every import statement of every module under jobs/,
those inside functions too (imported lazily is still imported), with relative imports
resolved, and the modules named by literal strings in `import_module()` calls.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
JOBS = ROOT / "jobs"

# Third-party modules `jobs` may import without declaring their distribution itself.
PROVIDED = {
    # Django's own dependency, and where Django's documentation imports sync_to_async from.
    "asgiref": "django",
    # Installed by the declared `psycopg[pool]`.
    "psycopg_pool": "psycopg",
    # jobs.testing is a pytest plugin: only a test run, which has pytest, loads it.
    "pytest": None,
    # ...whose fixtures it types (under TYPE_CHECKING only) with pytest-django's own classes.
    "pytest_django": None,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def imported_names(source: str, package: str) -> Iterator[str]:
    """The absolute names of the modules `source`, a module of `package`, imports."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                yield ".".join([*base, *([node.module] if node.module else [])])
            else:
                yield str(node.module)
        elif (
            isinstance(node, ast.Call)
            and _called_name(node) in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value


def imports_of_jobs() -> dict[str, set[str]]:
    """Module of jobs -> the top-level packages it imports."""
    imports = {}
    for path in sorted(JOBS.rglob("*.py")):
        module = module_name(path)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        names = imported_names(path.read_text(), package)
        imports[module] = {name.split(".")[0] for name in names}
    return imports


def repository_packages() -> set[str]:
    """The top-level packages and modules of this repository other than jobs."""
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")}
    modules = {path.stem for path in ROOT.glob("*.py")}
    return (packages | modules) - {"jobs"}


def test_imported_names__resolves_relative_and_lazy_and_literal_imports() -> None:
    source = """
from .. import arguments
from ...models import JobResult
import django.db, procrastinate

def later():
    import bench.timing
    importlib.import_module("project.settings")
"""

    names = set(imported_names(source, "jobs.management.commands"))

    assert names == {
        "jobs.management",
        "jobs.models",
        "django.db",
        "procrastinate",
        "bench.timing",
        "project.settings",
    }


def test_jobs__imports_nothing_else_of_this_repository() -> None:
    others = repository_packages()
    assert {"bench", "example", "project", "tests"} <= others

    found = {
        (module, package)
        for module, packages in imports_of_jobs().items()
        for package in packages & others
    }

    assert found == set()


def test_jobs__imports_only_its_declared_runtime_dependencies() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = {
        canonicalize_name(Requirement(line).name) for line in pyproject["project"]["dependencies"]
    }
    distributions = importlib.metadata.packages_distributions()
    others = repository_packages()

    undeclared = set()
    for module, packages in imports_of_jobs().items():
        for package in packages - set(sys.stdlib_module_names) - others - {"jobs"}:
            if package in PROVIDED:
                provider = PROVIDED[package]
                assert provider is None or provider in declared, package
                continue
            names = {canonicalize_name(name) for name in distributions.get(package, [])}
            if not names & declared:
                undeclared.add((module, package))

    assert undeclared == set()


# What `jobs` must not know of this project by name: its modules, and the environment
# variables its settings read (a site has its own, or none).
PROJECT_MODULE = re.compile(r"(?<![\w.])project\.[A-Za-z_]")
PROJECT_ENVIRONMENT = {"CONN_MAX_AGE", "DATABASE_POOL", "DJANGO_ENV"}


def environment_names(source: str) -> Iterator[str]:
    """The literal names `source` reads from or writes to an environment mapping: `X.get(name)`,
    `X.setdefault(name)`, `X[name]` and `os.getenv(name)` where X is `os.environ` or `env`."""
    for node in ast.walk(ast.parse(source)):
        key: ast.expr | None = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            receiver = ast.unparse(node.func.value)
            if (
                node.func.attr in {"get", "setdefault", "pop"}
                and receiver in {"os.environ", "environ", "env"}
            ) or (node.func.attr == "getenv"):
                key = node.args[0]
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) in {"os.environ", "env"}:
            key = node.slice
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            yield key.value


def test_environment_names__finds_reads_and_writes() -> None:
    source = """
env = {**os.environ}
env.setdefault("A", "1")
if env.get("B") and env["C"] and os.getenv("D") and os.environ["E"]:
    pass
"""

    assert set(environment_names(source)) == {"A", "B", "C", "D", "E"}


def test_jobs__names_no_module_or_environment_variable_of_this_project() -> None:
    found = set()
    for path in sorted(JOBS.rglob("*.py")):
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and PROJECT_MODULE.search(node.value)
            ):
                found.add((module_name(path), node.value))
        found |= {
            (module_name(path), name)
            for name in environment_names(source)
            if name in PROJECT_ENVIRONMENT
        }

    assert found == set()
