"""``cultureclip serve``: a search page and a JSON API over a retrieval index (FastAPI).

Routes:

- ``GET /``: the search page (one self-contained HTML file shipped in the package).
- ``GET /api/info``: what the index holds.
- ``GET /api/search?q=…&k=…``: text → images.
- ``POST /api/search-image`` (multipart field ``file``): image → texts.
- ``GET /api/image?id=…``: an indexed image, looked up by id (never by a path from the
  request), re-encoded as a JPEG of at most ``thumbnail_px`` pixels a side.
- ``GET /api/explain?id=…&q=…``: the LACLIP views behind one image's score.

Every error is JSON ``{"error": {"status": …, "message": …}}``; bad input never stops
the server. Uploads larger than ``max_upload_bytes`` get 413, non-image content types
415, undecodable or oversized images 400/413.
"""

from __future__ import annotations

import dataclasses
import io
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image, UnidentifiedImageError

from cultureclip.data.collections import ImageDecodeError, decode_image
from cultureclip.retrieval.index import RetrievalIndex, RetrievalIndexError

DEFAULT_MAX_UPLOAD_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
MAX_K = 100
_READ_BLOCK = 64 * 1024
_MULTIPART_OVERHEAD = 16 * 1024  # boundaries and part headers around the file bytes


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status)


def _page() -> str:
    return (
        resources.files("cultureclip.retrieval").joinpath("static/search.html").read_text("utf-8")
    )


def _decode_upload(data: bytes, max_pixels: int) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as image:
            # The header gives the size before any pixel is decoded: refuse bombs early.
            if image.width * image.height > max_pixels:
                raise HTTPException(
                    413,
                    f"image is {image.width}×{image.height}; at most {max_pixels:,} pixels allowed",
                )
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as exc:
        raise HTTPException(400, f"the upload is not a readable image ({exc})") from exc


def create_app(
    index_dir: str | Path | RetrievalIndex,
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    default_k: int = 12,
    thumbnail_px: int = 384,
) -> FastAPI:
    """The web app over one index (a directory, or an already loaded :class:`RetrievalIndex`)."""
    index = index_dir if isinstance(index_dir, RetrievalIndex) else RetrievalIndex(index_dir)
    app = FastAPI(title="cultureclip search", docs_url="/api/docs", redoc_url=None)
    app.state.index = index

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}"
            for e in exc.errors()
        )
        return _error(422, problems)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    @app.middleware("http")
    async def _limit_upload_size(request: Request, call_next: Any) -> Any:
        # Refuse a huge upload from its header, before the multipart parser spools it.
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is None:
                return _error(411, "uploads must send a Content-Length header")
            if not length.isdigit() or int(length) > max_upload_bytes + _MULTIPART_OVERHEAD:
                return _error(413, f"upload larger than the limit of {max_upload_bytes:,} bytes")
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(_page())

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        manifest = index.manifest
        return {
            "model": manifest["model"],
            "n_images": manifest["n_images"],
            "n_texts": manifest["n_texts"],
            "n_failed": manifest["n_failed"],
            "faiss": manifest["faiss"]["kind"],
            "laclip": manifest["laclip"],
            "default_k": default_k,
            "max_k": MAX_K,
            "max_upload_bytes": max_upload_bytes,
        }

    @app.get("/api/search")
    def search(
        q: str = Query(..., min_length=1, max_length=1000),
        k: int = Query(default_k, ge=1, le=MAX_K),
    ) -> dict[str, Any]:
        if not q.strip():
            raise HTTPException(400, "the query is empty")
        hits = index.search_text(q, k)
        return {
            "query": q,
            "k": k,
            "results": [
                {**dataclasses.asdict(hit), "image_url": f"/api/image?id={_quote(hit.image_id)}"}
                for hit in hits
            ],
        }

    @app.post("/api/search-image")
    async def search_image(
        file: UploadFile = File(...), k: int = Query(default_k, ge=1, le=MAX_K)
    ) -> dict[str, Any]:
        if not (file.content_type or "").startswith("image/"):
            raise HTTPException(
                415, f"expected an image upload (image/*), got {file.content_type or 'no type'}"
            )
        data = bytearray()
        while block := await file.read(_READ_BLOCK):
            data.extend(block)
            if len(data) > max_upload_bytes:
                raise HTTPException(
                    413, f"upload larger than the limit of {max_upload_bytes:,} bytes"
                )
        if not data:
            raise HTTPException(400, "the upload is empty")
        image = _decode_upload(bytes(data), max_pixels)
        hits = index.search_image(image, k)
        return {"k": k, "results": [dataclasses.asdict(hit) for hit in hits]}

    @lru_cache(maxsize=512)
    def thumbnail(image_id: str) -> bytes:
        image = decode_image(index.image_source(image_id))
        image.thumbnail((thumbnail_px, thumbnail_px))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=88)
        return buffer.getvalue()

    @app.get("/api/image")
    def image(id: str = Query(..., min_length=1, max_length=1000)) -> Response:
        if id not in index.image_row:
            raise HTTPException(404, f"no image {id!r} in this index")
        try:
            data = thumbnail(id)
        except ImageDecodeError as exc:
            raise HTTPException(
                500, f"image {id!r} is in the index but cannot be read: {exc}"
            ) from exc
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/explain")
    def explain(
        id: str = Query(..., min_length=1, max_length=1000),
        q: str = Query(..., min_length=1, max_length=1000),
    ) -> dict[str, Any]:
        if id not in index.image_row:
            raise HTTPException(404, f"no image {id!r} in this index")
        try:
            explanation = index.explain(id, q)
        except RetrievalIndexError as exc:
            raise HTTPException(409, str(exc)) from exc
        return {**dataclasses.asdict(explanation), "image_url": f"/api/image?id={_quote(id)}"}

    return app


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def serve(
    index_dir: str | Path | RetrievalIndex,
    host: str = "127.0.0.1",
    port: int = 8000,
    **options: Any,
) -> None:
    """Runs the app with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(index_dir, **options), host=host, port=port, log_level="info")
