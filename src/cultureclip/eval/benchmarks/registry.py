"""The benchmark registry: every module of this package, and ``cultureclip.benchmarks``
entry points of other packages, register on first use (a new benchmark is one file)."""

from __future__ import annotations

from cultureclip.registry import Registry

BENCHMARKS: Registry[type] = Registry(
    "benchmark", package="cultureclip.eval.benchmarks", entry_point_group="cultureclip.benchmarks"
)
