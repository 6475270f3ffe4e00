"""``cultureclip serve``: a search page and a JSON API over a retrieval index (FastAPI).

docs/retrieval.md lists the routes. Images are looked up by id, never by a path from the
request. Model work (queries, uploads, explanations) runs in a bounded worker pool off the
event loop, so the page, ``/api/info`` and thumbnails stay responsive; past ``max_pending``
waiting jobs a request gets 503 with ``Retry-After``. Every error is JSON
``{"error": {"status": …, "message": …}}`` (unknown routes and malformed bodies included);
a 500 carries an ``id`` and its details go to the server log only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from functools import lru_cache, partial
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import anyio
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from starlette.exceptions import HTTPException as StarletteHTTPException

from cultureclip.core.errors import UserError
from cultureclip.data.collections import ImageDecodeError, decode_image
from cultureclip.data.pairs import DEFAULT_MAX_PIXELS
from cultureclip.retrieval.search import RetrievalIndex

logger = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES = 8 * 1024 * 1024
MAX_K = 100
MAX_OFFSET = 10_000
DEFAULT_K = 12
THUMBNAIL_PX = 384  # longest side of the JPEGs /api/image sends
FULL_PX = 2048  # the same for its size=full views
RETRY_AFTER_S = 2  # what a busy server asks a client to wait
_READ_BLOCK = 64 * 1024
_MULTIPART_OVERHEAD = 16 * 1024  # boundaries and part headers around the file bytes

T = TypeVar("T")
#: an image id or a query text
Text = Annotated[str, Query(min_length=1, max_length=1000)]
TopK = Annotated[int, Query(ge=1, le=MAX_K)]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"status": status, "message": message}}, status_code=status, headers=headers
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
    except Image.DecompressionBombError as exc:
        raise HTTPException(413, f"image too large ({exc})") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise HTTPException(400, f"the upload is not a readable image ({exc})") from exc


class ModelWorkers:
    """A bounded pool for model work: ``workers`` threads, at most ``max_pending`` waiting.

    Jobs run through anyio's thread pool under a capacity limiter, so the event loop is
    never blocked; a job that would exceed the queue is refused with 503 + Retry-After.
    """

    def __init__(self, workers: int = 1, max_pending: int = 64) -> None:
        self.workers = workers
        self.max_pending = max_pending
        self.pending = 0  # touched from the event loop only
        self._limiter: anyio.CapacityLimiter | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self.pending >= self.workers + self.max_pending:
            raise HTTPException(
                503,
                f"the server is busy ({self.pending} model jobs queued); retry shortly",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.workers)
        self.pending += 1
        try:
            return await anyio.to_thread.run_sync(partial(fn, *args), limiter=self._limiter)
        finally:
            self.pending -= 1


def create_app(
    index_dir: str | Path | RetrievalIndex,
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int = 1,
    max_pending: int = 64,
    warm: bool = True,
    cjk_font: str | Path | bool | None = True,
) -> FastAPI:
    """The web app over one index (a directory, or an already loaded :class:`RetrievalIndex`).

    With ``warm`` the model is loaded and run once when the app starts (in the worker
    pool, so ``/api/health`` answers ``loading`` meanwhile). ``cjk_font``: True finds a
    CJK font on this machine, a path uses that font, False serves none.
    """
    from cultureclip.retrieval.fonts import find_cjk_font

    index = index_dir if isinstance(index_dir, RetrievalIndex) else RetrievalIndex(index_dir)
    font_path = find_cjk_font() if cjk_font is True else (Path(cjk_font) if cjk_font else None)
    served = _Served(
        index=index,
        pool=ModelWorkers(workers, max_pending),
        font=_FontSubset(font_path, index.texts),
        status="loading" if warm else "ready",
        max_upload_bytes=max_upload_bytes,
        max_pixels=max_pixels,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(served.warm()) if warm else None
        if warm:
            served.font.start()
        yield
        if task is not None and not task.done():
            task.cancel()
        await served.font.stop()

    app = FastAPI(
        title="cultureclip search",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.index = index
    _add_error_handling(app, max_upload_bytes)
    _add_page_routes(app, served)
    _add_search_routes(app, served)
    _add_image_routes(app, served)
    return app


class _FontSubset:
    """The CJK font cut down to the characters of the index, made once, on first need."""

    def __init__(self, path: Path | None, texts: list[str]) -> None:
        self.path, self.texts = path, texts
        self._task: asyncio.Future[bytes | None] | None = None
        self._child: asyncio.subprocess.Process | None = None

    def start(self) -> None:
        if self.path is not None and self._task is None:
            self._task = asyncio.ensure_future(self._subset_in_child())

    async def get(self) -> bytes | None:
        self.start()
        # shielded: a cancelled request must not cancel the subsetting the others wait for
        return None if self._task is None else await asyncio.shield(self._task)

    async def _subset_in_child(self) -> bytes | None:
        # fontTools is pure Python: subsetting in a thread would hold the GIL for seconds
        # and stall every request, so ``python -m cultureclip.retrieval.fonts`` does it.
        characters = "".join(sorted(set("".join(self.texts))))
        try:
            self._child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "cultureclip.retrieval.fonts",
                str(self.path),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            data, errors = await self._child.communicate(characters.encode("utf-8"))
            if self._child.returncode != 0:
                raise RuntimeError(errors.decode("utf-8", "replace")[-2000:])
            return data
        except Exception:
            logger.exception("subsetting the CJK font %s failed", self.path)
            return None

    async def stop(self) -> None:
        if self._child is not None and self._child.returncode is None:
            self._child.kill()
            await self._child.wait()


@dataclasses.dataclass
class _Served:
    """What the routes of one app share."""

    index: RetrievalIndex
    pool: ModelWorkers
    font: _FontSubset
    status: str
    max_upload_bytes: int
    max_pixels: int

    async def warm(self) -> None:
        try:
            await self.pool.run(self.index.warm)
            self.status = "ready"
            logger.info("model %s loaded and warmed", self.index.model_name)
        except Exception:
            self.status = "failed"
            logger.exception("loading the model of the index failed")

    def known(self, image_id: str) -> None:
        if image_id not in self.index.image_row:
            raise HTTPException(404, f"no image {image_id!r} in this index")


def _add_error_handling(app: FastAPI, max_upload_bytes: int) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}"
            for e in exc.errors()
        )
        return _error(422, problems)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:12]
        logger.error(
            "internal error %s on %s %s", error_id, request.method, request.url.path, exc_info=exc
        )
        response = _error(500, f"internal error (id {error_id}); the details are in the server log")
        response.headers["X-Error-Id"] = error_id
        return response

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


def _safe(fn: Callable[..., T], *args: Any) -> T:
    """Runs index code; a user error there (bad image, missing store) is logged in full
    and answered without paths."""
    try:
        return fn(*args)
    except ImageDecodeError as exc:
        raise HTTPException(422, f"the image cannot be read: {exc}") from exc
    except UserError as exc:
        error_id = uuid.uuid4().hex[:12]
        logger.error("request failed %s: %s", error_id, exc)
        raise HTTPException(
            503, f"the index cannot answer this (id {error_id}); see the server log"
        ) from exc


def _image_url(image_id: str, size: str | None = None) -> str:
    return f"/api/image?id={quote(image_id, safe='')}" + (f"&size={size}" if size else "")


def _urls(image_id: str) -> dict[str, str]:
    return {"image_url": _image_url(image_id), "full_url": _image_url(image_id, "full")}


def _add_page_routes(app: FastAPI, served: _Served) -> None:
    index = served.index

    @app.api_route(
        "/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False
    )
    async def page() -> HTMLResponse:
        html = resources.files("cultureclip.retrieval").joinpath("static/search.html")
        return HTMLResponse(html.read_text("utf-8"))

    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        return {"ready": served.status == "ready", "status": served.status}

    @app.get("/api/info")
    async def info() -> dict[str, Any]:
        manifest = index.manifest
        return {
            "collection": index.name,
            "split": manifest.get("split"),
            "model": index.model_name,
            "n_images": manifest["n_images"],
            "n_texts": manifest["n_texts"],
            "n_failed": manifest["n_failed"],
            "faiss": manifest["faiss"]["kind"],
            "laclip": manifest["laclip"],
            "default_k": DEFAULT_K,
            "max_k": MAX_K,
            "max_upload_bytes": served.max_upload_bytes,
            "ready": served.status == "ready",
            "cjk_font": served.font.path is not None,
        }

    @app.get("/api/font.woff", include_in_schema=False)
    async def font() -> Response:
        data = await served.font.get()
        if data is None:
            raise HTTPException(404, "this server has no CJK font to send")
        return Response(data, media_type="font/woff", headers={"Cache-Control": "max-age=86400"})

    @app.get("/api/item")
    async def item(id: Text) -> dict[str, Any]:
        served.known(id)
        rows = index.texts_of(id)
        return {
            "image_id": id,
            "collection": index.name,
            "texts": [{"text_id": index.text_ids[t], "text": index.texts[t]} for t in rows],
            **_urls(id),
        }


def _add_search_routes(app: FastAPI, served: _Served) -> None:
    index, pool = served.index, served.pool

    @app.get("/api/search")
    async def search(
        q: Text, k: TopK = DEFAULT_K, offset: int = Query(0, ge=0, le=MAX_OFFSET)
    ) -> dict[str, Any]:
        if not q.strip():
            raise HTTPException(400, "the query is empty")
        hits = await pool.run(_safe, index.search_text, q, k + offset)
        return {
            "query": q,
            "k": k,
            "offset": offset,
            "total": index.manifest["n_images"],
            "has_more": len(hits) == k + offset and offset + k < index.manifest["n_images"],
            "results": [
                {
                    **dataclasses.asdict(hit),
                    "text_ids": [index.text_ids[t] for t in index.texts_of(hit.image_id)],
                    **_urls(hit.image_id),
                }
                for hit in hits[offset : offset + k]
            ],
        }

    @app.post("/api/search-image")
    async def search_image(file: UploadFile = File(...), k: TopK = DEFAULT_K) -> dict[str, Any]:
        data = await _read_upload(file, served.max_upload_bytes)

        def run() -> list[Any]:
            return index.search_image(_decode_upload(data, served.max_pixels), k)

        hits = await pool.run(_safe, run)
        return {
            "k": k,
            "results": [
                {
                    **dataclasses.asdict(hit),
                    "images": [
                        {"image_id": i, "image_url": _image_url(i)}
                        for i in hit.image_ids
                        if i in index.image_row
                    ],
                }
                for hit in hits
            ],
        }

    @app.get("/api/explain")
    async def explain(id: Text, q: Text) -> dict[str, Any]:
        served.known(id)
        if index.laclip is None:
            raise HTTPException(
                409, "this index was built without LACLIP (--laclip); there are no crops to explain"
            )
        explanation = await pool.run(_safe, index.explain, id, q)
        return {**dataclasses.asdict(explanation), "image_url": _image_url(id, "full")}


async def _read_upload(file: UploadFile, max_upload_bytes: int) -> bytes:
    if not (file.content_type or "").startswith("image/"):
        raise HTTPException(
            415, f"expected an image upload (image/*), got {file.content_type or 'no type'}"
        )
    data = bytearray()
    while block := await file.read(_READ_BLOCK):
        data.extend(block)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"upload larger than the limit of {max_upload_bytes:,} bytes")
    if not data:
        raise HTTPException(400, "the upload is empty")
    return bytes(data)


def _add_image_routes(app: FastAPI, served: _Served) -> None:
    index = served.index

    def render(image_id: str, side: int) -> bytes:
        image = decode_image(index.image_source(image_id), index.max_pixels)
        image.thumbnail((side, side))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=88)
        return buffer.getvalue()

    # Thumbnails are small and asked for often; full views are large: a short cache.
    views = {
        "thumb": lru_cache(maxsize=512)(partial(render, side=THUMBNAIL_PX)),
        "full": lru_cache(maxsize=16)(partial(render, side=FULL_PX)),
    }

    @app.get("/api/image")
    def image(id: Text, size: str = Query("thumb", pattern="^(thumb|full)$")) -> Response:
        served.known(id)
        data = _safe(views[size], id)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})
