"""cultureclip: culture-aware vision-language models.

Stages (each a subpackage, each also a ``cultureclip`` subcommand):
``synth`` (CulTwin data), ``train`` (CultureCLIP fine-tuning), ``eval`` (cultural
benchmarks and reports), ``retrieval`` (indexes, LACLIP, search page). Shared model
backends live in :mod:`cultureclip.models`, data formats in :mod:`cultureclip.data`.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models"]


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): importing the package, e.g. for `cultureclip --help`, must not
    # pull in torch; `cultureclip.create_model` still works as before.
    if name in ("create_model", "list_models"):
        from cultureclip.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'cultureclip' has no attribute {name!r}")
