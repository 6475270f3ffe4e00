"""cultureclip: culture-aware vision-language models.

Stages (each a subpackage, each also a ``cultureclip`` subcommand):
``synth`` (CulTwin data), ``train`` (CultureCLIP fine-tuning), ``eval`` (cultural
benchmarks and reports), ``retrieval`` (indexes, LACLIP, search page). Shared model
backends live in :mod:`cultureclip.models`, data formats in :mod:`cultureclip.data`.
"""

__version__ = "0.1.0"

from cultureclip.models.registry import create_model, list_models  # noqa: E402

__all__ = ["__version__", "create_model", "list_models"]
