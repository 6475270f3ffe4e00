"""core/ is the ground floor: what every stage stands on imports nothing above it."""

from __future__ import annotations

import ast
from pathlib import Path

import cultureclip

PACKAGE = Path(cultureclip.__file__).parent


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every absolute ``cultureclip`` module ``path`` imports, inside functions too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.split(".")[0] == "cultureclip"]


def test_core_imports_nothing_of_the_package_above_it() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE)}:{line}: {name}"
        for path in sorted((PACKAGE / "core").rglob("*.py"))
        for line, name in _imported_modules(path)
        if not name.startswith("cultureclip.core")
    ]
    assert offenders == []


def test_config_registry_and_io_live_in_core() -> None:
    for module in ("config", "registry", "io"):
        assert (PACKAGE / "core" / f"{module}.py").is_file()
    assert not (PACKAGE / "config.py").exists() and not (PACKAGE / "registry.py").exists()
    assert not list(PACKAGE.glob("utils/*.py"))


def test_the_layering_check_sees_an_upward_import(tmp_path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from cultureclip.eval import api\n", encoding="utf-8")
    assert _imported_modules(module) == [(2, "cultureclip.eval")]
