"""FAISS indexes of a retrieval index: which kind, built, written and loaded for search."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from cultureclip.core.config import Config
from cultureclip.core.io import atomic_path
from cultureclip.retrieval.layout import RetrievalIndexError

if TYPE_CHECKING:
    import faiss


class FaissSettings(Config):
    """Which FAISS index to build. ``flat`` is exact; ``ivf``/``hnsw`` trade recall for speed;
    ``ivfpq`` also compresses the vectors (``pq_m`` bytes each at 8 bits) for millions."""

    kind: Literal["flat", "ivf", "hnsw", "ivfpq"] = "flat"
    #: IVF cells; default about 4·√N (capped so each cell gets ≥ 39 training vectors)
    nlist: int | None = Field(None, ge=1)
    #: IVF cells visited per query
    nprobe: int = Field(16, ge=1)
    #: HNSW graph degree
    hnsw_m: int = Field(32, ge=4)
    ef_construction: int = Field(200, ge=8)
    ef_search: int = Field(128, ge=1)
    #: IVF-PQ sub-quantizers (must divide the dimension); default dim/8
    pq_m: int | None = Field(None, ge=1)
    pq_bits: int = Field(8, ge=4, le=12)


def build_faiss(vectors: np.ndarray, settings: FaissSettings | None = None) -> faiss.Index:
    """An inner-product FAISS index over ``vectors`` ([N, D] float32)."""
    import faiss

    settings = settings or FaissSettings()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    if settings.kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif settings.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = settings.ef_construction
        index.hnsw.efSearch = settings.ef_search
    else:  # ivf, ivfpq
        nlist = settings.nlist or max(1, min(round(4 * np.sqrt(n)), n // 39))
        if n < nlist:
            raise RetrievalIndexError(
                f"IVF with nlist={nlist} needs at least {nlist} vectors, got {n}; use --faiss flat"
            )
        quantizer = faiss.IndexFlatIP(dim)
        if settings.kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            m = settings.pq_m or max(1, dim // 8)
            if dim % m:
                raise RetrievalIndexError(f"pq_m={m} must divide the dimension {dim}")
            if n < 2**settings.pq_bits:
                raise RetrievalIndexError(
                    f"IVF-PQ with pq_bits={settings.pq_bits} needs at least "
                    f"{2**settings.pq_bits} vectors to train, got {n}; use --faiss ivf or flat"
                )
            index = faiss.IndexIVFPQ(
                quantizer, dim, nlist, m, settings.pq_bits, faiss.METRIC_INNER_PRODUCT
            )
        index.train(vectors)
        index.nprobe = min(settings.nprobe, nlist)
    if n:
        index.add(vectors)
    return index


def read_faiss(path: Path, settings: FaissSettings) -> faiss.Index:
    """Loads a FAISS index built with ``settings``; its search-time knobs are not serialised
    by FAISS, so they are set again."""
    import faiss

    index = faiss.read_index(str(path))
    if settings.kind in ("ivf", "ivfpq"):
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = min(settings.nprobe, ivf.nlist)
    elif settings.kind == "hnsw":
        index.hnsw.efSearch = settings.ef_search
    return index


def write_faiss(index: faiss.Index, path: Path) -> None:
    import faiss

    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
