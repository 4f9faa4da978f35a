"""The package's import graph runs one way: library <- pipelines <- CLI, demo, scripts and benchmarks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT_FOLDERS = ("training", "bench")
LIBRARY_FOLDERS = ("mnist_diffusion", "pipelines")


def imported_modules(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` of `path` names (relative imports resolved against `path`)."""
    names = set()
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1]).replace(
        "pipelines", "mnist_diffusion.pipelines", 1
    )
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def python_files(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("folder", SCRIPT_FOLDERS)
def test_no_script_imports_another_script(folder):
    scripts = {path.stem for path in (ROOT / folder).glob("*.py")}
    for path in python_files(folder):
        assert not (imported_modules(path) & scripts), f"{path.relative_to(ROOT)} imports a script of {folder}/"


def test_nothing_edits_sys_path():
    for path in python_files(*SCRIPT_FOLDERS, *LIBRARY_FOLDERS):
        source = path.read_text()
        assert "sys.path.insert" not in source and "sys.path.append" not in source, path.relative_to(ROOT)


def test_nothing_below_the_command_line_imports_it():
    commands_and_cli = {ROOT / "mnist_diffusion" / "cli.py", *python_files("mnist_diffusion/commands")}
    for path in python_files(*LIBRARY_FOLDERS, *SCRIPT_FOLDERS):
        if path in commands_and_cli:
            continue
        imports = imported_modules(path)
        above = [
            name
            for name in imports
            if name.split(".")[:2] in (["mnist_diffusion", "commands"], ["mnist_diffusion", "cli"])
        ]
        assert not above, f"{path.relative_to(ROOT)} imports the command line"


def test_no_module_of_the_package_or_the_scripts_is_over_700_lines():
    for path in python_files(*LIBRARY_FOLDERS, "training"):
        lines = len(path.read_text().splitlines())
        assert lines <= 700, f"{path.relative_to(ROOT)} has {lines} lines"
