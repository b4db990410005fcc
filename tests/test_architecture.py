"""The package's shape is checked, not hoped for: layers and acyclic siblings (import-linter contracts in
pyproject.toml), no import of another module's private names, files under 500 lines, library functions under 8
parameters. A temporary module that imports upwards is caught by both the contracts and the cycle tool."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PACKAGE = SRC / "adaptlab"
CYCLES_TOOL = REPO.parent / "shared" / "tools" / "import_cycles.py"
MAX_LINES = 500
MAX_PARAMS = 8


def lint_imports(src: Path, root: Path = REPO) -> subprocess.CompletedProcess:
    """``lint-imports`` with the project's contracts, importing adaptlab from ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    script = ("import sys; from importlinter.cli import lint_imports; "
              f"sys.exit(lint_imports(config_filename={str(root / 'pyproject.toml')!r}, no_cache=True))")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=root)


def test_the_layer_and_cycle_contracts_hold() -> None:
    out = lint_imports(SRC)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_an_upward_import_breaks_the_contracts(tmp_path: Path) -> None:
    copy = tmp_path / "src"
    shutil.copytree(PACKAGE, copy / "adaptlab", ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "adaptlab" / "data" / "shortcut.py").write_text(
        '"""A data module that reaches up into the experiment layer (and so into a cycle)."""\n\n'
        "def run(cfg):\n    from adaptlab.experiment.runner import run_experiment\n\n    return run_experiment(cfg, '.')\n")
    splits = copy / "adaptlab" / "data" / "splits.py"  # ... and is used from below: a cycle through the layers
    splits.write_text(splits.read_text() + "\n\ndef shortcut_run(cfg):\n    from adaptlab.data import shortcut\n\n"
                      "    return shortcut.run(cfg)\n")
    out = lint_imports(copy)
    assert out.returncode != 0
    assert "adaptlab.data.shortcut -> adaptlab.experiment.runner" in out.stdout
    if CYCLES_TOOL.is_file():
        tool = subprocess.run([sys.executable, str(CYCLES_TOOL), str(copy), "adaptlab"], capture_output=True, text=True)
        assert tool.returncode == 1 and "cycle" in tool.stdout


@pytest.mark.skipif(not CYCLES_TOOL.is_file(), reason="../shared/tools/import_cycles.py is not beside the project")
def test_the_cycle_tool_finds_no_cycle() -> None:
    tool = subprocess.run([sys.executable, str(CYCLES_TOOL), str(SRC), "adaptlab"], capture_output=True, text=True)
    assert tool.returncode == 0, tool.stdout


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(encoding="utf-8"))) for p in sorted(PACKAGE.rglob("*.py"))]


def test_no_module_imports_another_modules_private_names() -> None:
    offences = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("adaptlab"):
                offences += [f"{path.relative_to(SRC)}: {node.module}.{a.name}" for a in node.names
                             if a.name.startswith("_") and not a.name.startswith("__")]
                if any(part.startswith("_") and part != "__main__" for part in (node.module or "").split(".")):
                    offences.append(f"{path.relative_to(SRC)}: {node.module}")
    assert not offences, offences


def test_files_stay_under_500_lines() -> None:
    long = {str(p.relative_to(SRC)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long


def test_library_functions_take_at_most_8_parameters() -> None:
    """Settings are grouped into config objects; the CLI's typer commands (one parameter per flag) are exempt."""
    offences = []
    for path, tree in _modules():
        if path.parent.name == "cli":
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
                names = [n for n in names if n not in ("self", "cls")]
                if len(names) > MAX_PARAMS:
                    offences.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({len(names)})")
    assert not offences, offences


def test_no_test_hooks_in_library_code() -> None:
    hooks = [str(p.relative_to(SRC)) for p, _ in _modules() if "ADAPTLAB_TEST" in p.read_text(encoding="utf-8")]
    assert not hooks, hooks
