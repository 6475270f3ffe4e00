"""The benchmark registry (filled by the built-in benchmark modules on import)."""

from __future__ import annotations

from cultureclip.registry import Registry

BENCHMARKS: Registry[type] = Registry("benchmark")
