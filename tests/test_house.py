"""Tier 1 (pure): the house rules, read from the source (issue #24). Test modules share code through tests/helpers/,
never by importing each other or conftest.py; no file over 400 lines, no function over 80; the package's floors (the
import-linter contract in pyproject.toml) are kept; no benchmark puts tests/ on sys.path.
"""

import ast
import importlib.util
import os
import subprocess
import sys

import pytest

from tests.helpers.paths import ROOT

MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80


def python_files(*folders: str) -> list[str]:
    """Every .py file under the given folders of the checkout, as paths relative to its root."""
    found = []
    for folder in folders:
        for directory, subdirectories, names in os.walk(os.path.join(ROOT, folder)):
            subdirectories[:] = sorted(name for name in subdirectories if name != "__pycache__")
            found += [os.path.relpath(os.path.join(directory, name), ROOT) for name in sorted(names)]
    return [path for path in found if path.endswith(".py")]


def parsed(path: str) -> ast.Module:
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
        return ast.parse(handle.read(), filename=path)


def is_test_module_or_conftest(name: str) -> bool:
    """`test_x`, `conftest`, `tests.test_x`, `tests.conftest` (and relative forms, whose level ast keeps apart)."""
    last = name.split(".")[-1]
    return last == "conftest" or last.startswith("test_")


def imported_test_modules(path: str) -> list[str]:
    """The test modules and conftests that `path` imports, as `path:line: module`."""
    found = []
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            # `from tests import test_x` or `from . import conftest` name the module in the aliases
            names = [module] + [f"{module}.{alias.name}" for alias in node.names if not module or module == "tests"]
        else:
            continue
        found += [f"{path}:{node.lineno}: {name}" for name in names if name and is_test_module_or_conftest(name)]
    return found


def long_files(paths: list[str], limit: int = MAX_FILE_LINES) -> list[str]:
    found = []
    for path in paths:
        with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
            count = len(handle.read().splitlines())
        if count > limit:
            found.append(f"{path}: {count} lines")
    return found


def long_functions(paths: list[str], limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """Functions (and methods) longer than `limit` lines, from their `def` to their last line."""
    found = []
    for path in paths:
        for node in ast.walk(parsed(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                count = node.end_lineno - node.lineno + 1
                if count > limit:
                    found.append(f"{path}:{node.lineno}: {node.name} has {count} lines")
    return found


def mentions_sys_path(node: ast.AST) -> bool:
    return any(
        isinstance(inner, ast.Attribute)
        and inner.attr == "path"
        and isinstance(inner.value, ast.Name)
        and inner.value.id == "sys"
        for inner in ast.walk(node)
    )


def names_tests_folder(node: ast.AST) -> bool:
    """A string in `node` that is the tests folder: "tests", or a path ending in it."""
    return any(
        isinstance(inner, ast.Constant)
        and isinstance(inner.value, str)
        and inner.value.replace("\\", "/").rstrip("/").split("/")[-1] == "tests"
        for inner in ast.walk(node)
    )


def sys_path_changes_naming_tests(path: str) -> list[str]:
    """Statements of `path` that change sys.path (or call site.addsitedir) with the tests folder."""
    found = []
    for node in ast.walk(parsed(path)):
        if isinstance(node, (ast.Expr, ast.Assign, ast.AugAssign)):
            source = ast.unparse(node)
            if (mentions_sys_path(node) or "addsitedir" in source) and names_tests_folder(node):
                found.append(f"{path}:{node.lineno}: {source}")
    return found


def test_no_test_module_imports_another_test_module_or_conftest():
    offenders = [found for path in python_files("tests", "benchmarks") for found in imported_test_modules(path)]
    assert offenders == [], "share it through tests/helpers/ instead"


def test_no_python_file_is_over_400_lines():
    assert long_files(python_files("ddp_bench", "tests", "benchmarks")) == []


def test_no_function_in_the_tests_or_benchmarks_is_over_80_lines():
    assert long_functions(python_files("tests", "benchmarks")) == []


def test_no_function_in_the_package_is_over_80_lines():
    assert long_functions(python_files("ddp_bench")) == []


def test_the_packages_floors_are_kept():
    """The import-linter layers contract in pyproject.toml: no import runs back up a floor."""
    if importlib.util.find_spec("importlinter") is None:
        pytest.skip("import-linter is not installed (pip install -e .[test])")
    lint = "from importlinter.cli import lint_imports_command; lint_imports_command()"
    done = subprocess.run(
        [sys.executable, "-c", lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_no_benchmark_puts_the_tests_folder_on_sys_path():
    offenders = [found for path in python_files("benchmarks") for found in sys_path_changes_naming_tests(path)]
    assert offenders == [], "import the helper as tests.helpers.NAME, from the checkout's root"
