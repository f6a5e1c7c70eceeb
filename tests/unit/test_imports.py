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


# --- the shape of slimbert/: no cycle between modules or folders, and compression/ stays a set of transforms

def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _slimbert_imports(path: Path, module: str, known: set[str]) -> set[str]:
    """slimbert modules that ``path`` imports anywhere (module level, TYPE_CHECKING and function bodies)."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        for name in names:
            while name and name not in known:  # `from slimbert.x import f` imports slimbert.x
                name = name.rpartition(".")[0]
            if name and name != module and name != "slimbert":
                found.add(name)
    return found


def import_graph(root: Path, package: str = "slimbert") -> dict[str, set[str]]:
    files = {_module_name(p, root): p for p in (root / package).rglob("*.py")}
    return {m: _slimbert_imports(p, m, set(files)) for m, p in files.items()}


def folder_of(module: str) -> str:
    """``slimbert.compression.heads`` -> ``slimbert.compression``; top-level modules are their own folder."""
    parts = module.split(".")
    return ".".join(parts[:2])


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def folder_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for a, targets in graph.items():
        for b in targets:
            if folder_of(a) != folder_of(b):
                out.setdefault(folder_of(a), set()).add(folder_of(b))
    return out


def test_no_import_cycle_between_modules() -> None:
    assert find_cycle(import_graph(ROOT)) is None


def test_no_import_cycle_between_folders() -> None:
    assert find_cycle(folder_graph(import_graph(ROOT))) is None


def test_compression_is_transforms_only() -> None:
    """compression/ makes artifacts; it never loads predictors, publishes, runs jobs or builds reports."""
    forbidden = ("slimbert.inference", "slimbert.orchestrate", "slimbert.report", "slimbert.jobs",
                 "slimbert.benchmark")
    graph = import_graph(ROOT)
    offenders = {m: sorted(t for t in targets if t.startswith(forbidden))
                 for m, targets in graph.items() if m.startswith("slimbert.compression")}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_function_local_imports_are_few_and_say_why() -> None:
    local: list[str] = []
    for package in ("slimbert", "app", "workers"):
        for path in (ROOT / package).rglob("*.py"):
            lines = path.read_text().splitlines()
            for fn in ast.walk(ast.parse("\n".join(lines))):
                if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                    local += [f"{path.relative_to(ROOT)}:{n.lineno}: {lines[n.lineno - 1].strip()}"
                              for n in ast.walk(fn) if isinstance(n, ast.Import | ast.ImportFrom)]
    assert len(local) < 15, local
    assert [line for line in local if "#" not in line] == []  # each names its reason


def test_the_cycle_checks_catch_cycles(tmp_path: Path) -> None:
    pkg = tmp_path / "slimbert"
    (pkg / "a").mkdir(parents=True)
    (pkg / "b").mkdir()
    (pkg / "a" / "x.py").write_text("from slimbert.b.y import f\n")
    # Hidden behind TYPE_CHECKING and inside a function, as the old pipeline <-> stages cycle was.
    (pkg / "b" / "y.py").write_text("from typing import TYPE_CHECKING\n"
                                    "if TYPE_CHECKING:\n    from slimbert.a import z\n"
                                    "def f():\n    from slimbert.a.x import g\n")
    (pkg / "a" / "z.py").write_text("")
    graph = import_graph(tmp_path)
    assert find_cycle(graph) == ["slimbert.a.x", "slimbert.b.y", "slimbert.a.x"]
    assert find_cycle(folder_graph(graph)) == ["slimbert.a", "slimbert.b", "slimbert.a"]


def test_modules_are_small() -> None:
    """A newcomer reads a module in one sitting: none over 400 lines."""
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines())
             for package in ("slimbert", "app", "workers") for p in (ROOT / package).rglob("*.py")}
    assert {f: n for f, n in sizes.items() if n > 400} == {}
