"""The import direction: slimbert/ imports neither app/ nor workers/; app/ never imports workers/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize(("package", "forbidden"), [("slimbert", {"app", "workers"}), ("app", {"workers"})])
def test_import_direction(package: str, forbidden: set[str]) -> None:
    files = list((ROOT / package).rglob("*.py"))
    assert files, f"no python files under {package}/"
    offenders = {str(f.relative_to(ROOT)): sorted(_imported_roots(f) & forbidden) for f in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_check_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from workers.tasks import compress\n")
    assert "workers" in _imported_roots(bad)
