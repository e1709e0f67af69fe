"""Layering: ops and analysis meet only in graphprune.core (imports read with ``ast``).

``graphprune.core`` holds the contract (Blocked, Coupling, PlanView, value facts) and imports no
other graphprune module. Op rules never import the analysis; the analysis reaches rules only
through the ``graphprune.ops`` package (its registry), never a rule module's internals.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "graphprune"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every graphprune module ``path`` imports, at any depth.

    ``from a import b`` counts as ``a.b`` when that is a module, else as ``a``.
    """
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                where = PACKAGE.parent / Path(*sub.split("."))
                is_module = where.with_suffix(".py").is_file() or where.is_dir()
                found.add(sub if is_module else node.module)
    return {name for name in found if name == "graphprune" or name.startswith("graphprune.")}


def _modules(folder: str) -> dict[str, set[str]]:
    return {_module_name(p): imported_modules(p) for p in sorted((PACKAGE / folder).glob("*.py"))}


def _under(name: str, package: str) -> bool:
    return name == package or name.startswith(f"{package}.")


def test_core_imports_no_graphprune_module():
    assert imported_modules(PACKAGE / "core.py") == set()


@pytest.mark.parametrize("module, imports", sorted(_modules("ops").items()))
def test_ops_never_import_the_analysis(module, imports):
    assert not [name for name in imports if _under(name, "graphprune.analysis")], module


@pytest.mark.parametrize("module, imports", sorted(_modules("analysis").items()))
def test_analysis_reaches_rules_only_through_the_ops_package(module, imports):
    internals = [name for name in imports if name.startswith("graphprune.ops.")]
    assert not internals, f"{module} imports {internals}"


def test_the_checker_sees_a_violation(tmp_path):
    """The import reader itself: a nested ``from graphprune.analysis.axes import X`` is found."""
    source = tmp_path / "rule.py"
    source.write_text("def f():\n    from graphprune.analysis.axes import AxisTable\n"
                      "import graphprune.ops.base\nfrom graphprune.ops import lookup\n")
    assert imported_modules(source) == {"graphprune.analysis.axes", "graphprune.ops.base",
                                        "graphprune.ops"}
