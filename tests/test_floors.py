"""pyproject.toml's lower bounds and constraints/floors.txt name the same versions.

`make test-floors` runs the suite with every dependency at its floor; that run only
proves the declared bounds if the two files agree, so any bound moved in one file
and not the other fails here.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def declared_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra, extra_lines in project["optional-dependencies"].items():
        if extra == "bench":  # the reference tools we time against, pinned exactly
            continue
        lines += extra_lines
    requirements = [Requirement(line) for line in lines]
    return [r for r in requirements if canonicalize_name(r.name) != "cultureclip"]


def floor_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints" / "floors.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def lower_bound(requirement: Requirement) -> str | None:
    bounds = [s.version for s in requirement.specifier if s.operator in (">=", "==")]
    return bounds[0] if bounds else None


def test_every_declared_dependency_has_a_lower_bound() -> None:
    unbounded = [str(r) for r in declared_requirements() if lower_bound(r) is None]
    assert not unbounded, f"no lower bound: {unbounded}"


def test_floors_pin_each_dependency_at_its_lower_bound() -> None:
    pins = floor_pins()
    wrong = []
    for requirement in declared_requirements():
        pinned = pins.get(canonicalize_name(requirement.name))
        if pinned is None or Version(pinned) != Version(lower_bound(requirement) or "0"):
            wrong.append(f"{requirement.name}: pyproject {requirement.specifier}, floors {pinned}")
    assert not wrong, wrong
