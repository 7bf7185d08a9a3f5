"""The house rules of the package layout (docs/architecture.md), checked on the real tree:
module and function sizes, layers that point one way (import-linter, and a planted upward
import that it refuses), environment variables read in one place, no test-only code."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.procs import REPO

PACKAGE = REPO / "ray_app"
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 450, 80


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def longest_functions(n: int = 10) -> list[tuple[int, str]]:
    """(lines, 'module:function') of the longest functions, docstrings included."""
    found = []
    for path in _modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                found.append((lines, f"{path.relative_to(REPO)}:{node.name}"))
    return sorted(found, reverse=True)[:n]


def test_no_module_over_450_lines_and_no_function_over_80():
    big = [(len(p.read_text().splitlines()), str(p.relative_to(REPO))) for p in _modules()]
    assert max(big)[0] <= MAX_MODULE_LINES, sorted(big, reverse=True)[:5]
    longest = longest_functions()
    print("longest functions:", longest)
    assert longest[0][0] <= MAX_FUNCTION_LINES, longest


def test_import_linter_keeps_the_layers_and_refuses_a_planted_upward_import(tmp_path: Path):
    lint = str(Path(sys.executable).parent / "lint-imports")
    ok = subprocess.run([lint], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout[-3000:]
    # The same contracts on a copy whose bottom layer imports the CLI.
    shutil.copytree(PACKAGE, tmp_path / "ray_app")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    errors = tmp_path / "ray_app" / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\nimport ray_app.cli.app  # noqa: E402,F401\n")
    bad = subprocess.run([lint], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert bad.returncode != 0, bad.stdout[-3000:]
    assert "ray_app.core.errors -> ray_app.cli.app" in bad.stdout


# Reads of the environment outside the settings object: none. (Writing a variable for a
# child process, or handing the whole environment to one, is not a read of a setting.)
ENV_READ = re.compile(r"os\.getenv\(|os\.environ\.get\((?!['\"]PATH)|os\.environ\[['\"](?!PATH)")


def test_environment_variables_are_read_in_the_settings_object_only():
    readers = [str(p.relative_to(REPO)) for p in _modules()
               if ENV_READ.search(p.read_text()) and p.name != "settings.py"]  # fmt: skip
    assert readers == []


def test_no_fault_injection_in_the_package():
    """Crashing on purpose is the tests' hook (tests/support/faults.py), not product code."""
    exits = [str(p.relative_to(REPO)) for p in _modules() if "os._exit" in p.read_text()]
    assert exits == []
    fields = re.findall(r"fail_once|\bfault", (PACKAGE / "core" / "config.py").read_text())
    assert fields == []
