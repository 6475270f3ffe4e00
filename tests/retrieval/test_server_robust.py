"""The server stays responsive during model work, warms up at start, hides paths, and
answers every error in one format."""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image

from cultureclip.retrieval import RetrievalIndex
from cultureclip.retrieval.server import create_app


def _png(size: tuple[int, int] = (32, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width``×``height`` (a decompression bomb's first bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = b"IDAT" + zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
        + struct.pack(">I", len(idat) - 4)
        + idat
        + struct.pack(">I", zlib.crc32(idat) & 0xFFFFFFFF)
    )


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["status"] == status, body
    return body["error"]["message"]


def _start(app) -> tuple[uvicorn.Server, threading.Thread, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def test_info_answers_fast_while_an_upload_is_encoded(laclip_index: Path, session_model) -> None:
    index = RetrievalIndex(laclip_index, model=session_model)
    original = index.search_image
    encoding = threading.Event()

    def slow_search_image(image, k=10):
        encoding.set()
        time.sleep(2.0)  # a 5000² LACLIP upload on a CPU takes longer than this
        return original(image, k)

    index.search_image = slow_search_image  # type: ignore[method-assign]
    server, thread, url = _start(create_app(index, warm=False))
    try:
        result: dict[str, object] = {}

        def upload() -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                result["upload"] = http.post(
                    "/api/search-image", files={"file": ("q.png", _png(), "image/png")}
                )

        uploader = threading.Thread(target=upload)
        uploader.start()
        assert encoding.wait(10)
        with httpx.Client(base_url=url, timeout=10) as http:
            started = time.perf_counter()
            info = http.get("/api/info")
            info_s = time.perf_counter() - started
            started = time.perf_counter()
            thumb = http.get("/api/image", params={"id": index.image_ids[0]})
            thumb_s = time.perf_counter() - started
        uploader.join(30)
        assert info.status_code == 200 and thumb.status_code == 200
        assert info_s < 0.5, f"/api/info took {info_s:.2f}s during an upload"
        assert thumb_s < 0.5, f"/api/image took {thumb_s:.2f}s during an upload"
        assert result["upload"].status_code == 200  # type: ignore[union-attr]
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_full_queue_answers_503_with_retry_after(laclip_index: Path, session_model) -> None:
    index = RetrievalIndex(laclip_index, model=session_model)
    release = threading.Event()
    original = index.search_text

    def blocked(text, k=10):
        release.wait(20)
        return original(text, k)

    index.search_text = blocked  # type: ignore[method-assign]
    server, thread, url = _start(create_app(index, warm=False, workers=1, max_pending=1))
    try:
        responses: list[httpx.Response] = []

        def query(text: str) -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                responses.append(http.get("/api/search", params={"q": text}))

        busy = [threading.Thread(target=query, args=(f"q{i}",)) for i in range(2)]
        for worker in busy:
            worker.start()
        time.sleep(0.5)  # both are in: one running, one queued
        with httpx.Client(base_url=url, timeout=10) as http:
            refused = http.get("/api/search", params={"q": "one too many"})
            explain = http.get("/api/explain", params={"id": index.image_ids[0], "q": "x"})
        assert "busy" in _error(refused, 503) and refused.headers["Retry-After"] == "2"
        _error(explain, 503)  # explanations share the cap
        release.set()
        for worker in busy:
            worker.join(30)
        assert [r.status_code for r in responses] == [200, 200]
    finally:
        release.set()
        server.should_exit = True
        thread.join(timeout=10)


def test_model_is_loaded_and_warmed_at_start(laclip_index: Path, tiny_clip_dir: Path) -> None:
    index = RetrievalIndex(laclip_index)  # no model passed: it is loaded from the manifest
    assert index._model is None
    with TestClient(create_app(index, cjk_font=False)) as client:
        deadline = time.monotonic() + 60
        while not (health := client.get("/api/health").json())["ready"]:
            assert health["status"] == "loading" and time.monotonic() < deadline
            time.sleep(0.1)
        assert index._model is not None  # before any search
        assert client.get("/api/info").json()["ready"] is True
        started = time.perf_counter()
        assert client.get("/api/search", params={"q": "round"}).status_code == 200
        assert time.perf_counter() - started < 5


@pytest.fixture(scope="module")
def client(laclip_index, session_model):
    index = RetrievalIndex(laclip_index, model=session_model)
    app = create_app(index, warm=False, max_upload_bytes=50_000, max_pixels=1_000_000)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_no_server_path_is_shown(client, laclip_index: Path, tiny_clip_dir: Path) -> None:
    info = client.get("/api/info")
    for secret in (str(laclip_index.parent), str(tiny_clip_dir), "/tmp", "/home"):
        assert secret not in info.text
    assert info.json()["collection"] == "data/test"
    assert info.json()["model"] == f"hf:{tiny_clip_dir.name}"
    page = client.get("/").text
    assert str(laclip_index.parent) not in page and str(tiny_clip_dir) not in page


def test_a_500_carries_an_id_and_no_details(client, caplog) -> None:
    index = client.app.state.index

    def broken(text, k=10):
        raise RuntimeError("secret at /srv/private/collection")

    original = index.search_text
    index.search_text = broken
    try:
        with caplog.at_level("ERROR", logger="cultureclip.retrieval.server"):
            response = client.get("/api/search", params={"q": "x"})
    finally:
        index.search_text = original
    message = _error(response, 500)
    assert "/srv/private" not in message and "RuntimeError" not in message
    error_id = response.headers["X-Error-Id"]
    assert error_id in message
    assert any(error_id in r.getMessage() for r in caplog.records)
    assert "secret at /srv/private" in caplog.text  # the details are in the log


def test_every_error_has_one_format(client) -> None:
    _error(client.get("/no/such/route"), 404)
    assert "Method Not Allowed" in _error(client.post("/api/search", content=b""), 405)
    garbled = client.post(
        "/api/search-image",
        content=b"garbage without boundaries",
        headers={"Content-Type": "multipart/form-data; boundary=zz"},
    )
    assert garbled.status_code in (400, 422)
    _error(garbled, garbled.status_code)
    bomb = _png_header_only(20_000, 20_000)  # 400 megapixels: PIL's bomb check fires on open
    assert "too large" in _error(
        client.post("/api/search-image", files={"file": ("b.png", bomb, "image/png")}), 413
    )
    assert client.head("/").status_code == 200
    assert client.get("/api/docs").status_code == 404  # no CDN-backed docs page
    assert client.get("/api/openapi.json").json()["info"]["title"] == "cultureclip search"


def test_paging_item_view_and_text_ids(client) -> None:
    first = client.get("/api/search", params={"q": "round", "k": 5}).json()
    second = client.get("/api/search", params={"q": "round", "k": 5, "offset": 5}).json()
    ids = [r["image_id"] for r in first["results"]] + [r["image_id"] for r in second["results"]]
    assert len(set(ids)) == 10 and first["has_more"] and second["offset"] == 5
    assert all(r["text_ids"] for r in first["results"])
    item = client.get("/api/item", params={"id": ids[0]}).json()
    assert item["texts"] and {"text_id", "text"} <= set(item["texts"][0])
    full = client.get(first["results"][0]["full_url"])
    assert full.status_code == 200 and full.headers["content-type"] == "image/jpeg"
    texts = client.post(
        "/api/search-image", params={"k": 3}, files={"file": ("q.png", _png(), "image/png")}
    ).json()["results"]
    assert all(t["text_id"] and t["images"] for t in texts)
    assert texts[0]["images"][0]["image_url"].startswith("/api/image?id=")


def test_cjk_web_font_subset_covers_the_index_texts(laclip_index: Path, session_model) -> None:
    from fontTools.ttLib import TTFont

    from cultureclip.retrieval.fonts import find_cjk_font

    index = RetrievalIndex(laclip_index, model=session_model)
    with TestClient(create_app(index, warm=False, cjk_font=False)) as client:
        assert client.get("/api/info").json()["cjk_font"] is False
        _error(client.get("/api/font.woff"), 404)
    if find_cjk_font() is None:
        pytest.skip("no CJK font on this machine (pip install 'cultureclip[cjk]')")
    with TestClient(create_app(index, warm=False)) as client:
        response = client.get("/api/font.woff")
    assert response.status_code == 200 and response.headers["content-type"] == "font/woff"
    font = TTFont(io.BytesIO(response.content))
    assert {ord(c) for c in "两个红色的图案"} <= set(font.getBestCmap())
    assert len(response.content) < 200_000  # a subset, not the 16 MB font
