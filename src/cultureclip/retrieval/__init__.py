"""Retrieval: index a collection, search it, re-score with LACLIP local alignment, serve a page.

- :mod:`cultureclip.retrieval.laclip`: LACLIP views, weights and fused vectors.
- :mod:`cultureclip.retrieval.index`: :func:`build_index` (``run``) writes an index directory.
- :mod:`cultureclip.retrieval.search`: :class:`RetrievalIndex` loads and queries one.
- :mod:`cultureclip.retrieval.evaluate`: Recall@K / MR, global-only next to LACLIP sweeps (``run``).
- :mod:`cultureclip.retrieval.server`: the FastAPI search page (``create_app``).
"""

from cultureclip.retrieval.evaluate import (
    RetrievalEvalConfig,
    SweepResult,
    evaluate_retrieval,
)
from cultureclip.retrieval.faiss_index import FaissSettings, build_faiss
from cultureclip.retrieval.index import IndexConfig, IndexSummary, build_index, write_index
from cultureclip.retrieval.laclip import (
    LaclipEncoder,
    LaclipSettings,
    agreement_weights,
    crop_boxes,
    explicit_scores,
    fuse,
    parse_laclip_option,
)
from cultureclip.retrieval.layout import RetrievalIndexError
from cultureclip.retrieval.search import RetrievalIndex

__all__ = [
    "FaissSettings",
    "IndexConfig",
    "IndexSummary",
    "LaclipEncoder",
    "LaclipSettings",
    "RetrievalEvalConfig",
    "RetrievalIndex",
    "RetrievalIndexError",
    "SweepResult",
    "agreement_weights",
    "build_faiss",
    "build_index",
    "crop_boxes",
    "evaluate_retrieval",
    "explicit_scores",
    "fuse",
    "parse_laclip_option",
    "write_index",
]
