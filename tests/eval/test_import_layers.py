"""No import cycles between eval/, models/ and vlm/: eval scores with the model backends
(the generative one, models/generative.py, with models/chat.py's chat helpers) and vlm/
fine-tunes with those same helpers, so nothing under models/ may import eval or vlm, and
nothing under vlm/ eval (read from the source, imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "cultureclip"


def imported_packages(package: str) -> dict[str, set[str]]:
    """``{module file: the cultureclip sub-packages it imports}`` of one sub-package."""
    found: dict[str, set[str]] = {}
    for path in sorted((PACKAGE / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            modules = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            names |= {m.split(".")[1] for m in modules if m.startswith("cultureclip.")}
        found[str(path.relative_to(PACKAGE))] = names
    return found


def reaches(package: str) -> set[str]:
    """The sub-packages ``package`` imports, directly or through the ones it imports."""
    seen, todo = set(), [package]
    while todo:
        for names in imported_packages(todo.pop()).values():
            todo += [name for name in names - seen if (PACKAGE / name).is_dir()]
            seen |= names
    return seen


@pytest.mark.parametrize(("lower", "upper"), [("models", "eval"), ("models", "vlm")])
def test_no_import_cycle(lower: str, upper: str) -> None:
    assert lower in reaches(upper)  # the one way
    back = [module for module, names in imported_packages(lower).items() if upper in names]
    assert not back, f"{', '.join(back)} import cultureclip.{upper}: a cycle with {upper}/"
    assert upper not in reaches(lower), f"cultureclip.{lower} reaches {upper}/: a cycle"


def test_eval_and_vlm_stand_apart() -> None:
    """Scoring and fine-tuning share models/chat.py, not each other."""
    assert "eval" not in reaches("vlm") and "vlm" not in reaches("eval")
