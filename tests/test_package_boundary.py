"""src/seggpt is the product: it imports nothing from the repository around it (projects/, scripts/, benchmarks/,
tests/), never edits sys.path to reach it, and every seggpt module it imports exists."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "seggpt"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _outside_names() -> set[str]:
    """Top-level names that only the repository around the package could provide."""
    names = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "src"}
    for folder in ("benchmarks", "scripts", "tests", "projects"):
        names |= {p.stem for p in (ROOT / folder).rglob("*.py")}
    return names


def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
    return found


def _is_module(dotted: str) -> bool:
    path = ROOT / "src" / Path(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def test_the_package_imports_nothing_from_outside_it():
    outside = _outside_names()
    assert {"projects", "scripts", "tests", "benchmarks", "conftest"} <= outside
    bad = []
    for module in MODULES:
        rel = module.relative_to(ROOT)
        for name in _imports(module):
            if name.split(".")[0] in outside:
                bad.append(f"{rel}: import {name}")
            elif name.split(".")[0] == "seggpt" and not _is_module(name) and not _is_module(name.rpartition(".")[0]):
                bad.append(f"{rel}: import {name} (no such module in src/seggpt)")
        if "sys.path" in module.read_text():
            bad.append(f"{rel}: touches sys.path")
    assert not bad, bad
