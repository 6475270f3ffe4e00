"""The search app: JSON API, images by id only, upload limits, and staying up after bad input."""

from __future__ import annotations

import io

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cultureclip.retrieval import RetrievalIndex
from cultureclip.retrieval.server import create_app


def _png(size: tuple[int, int] = (24, 24), colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def client(laclip_index, session_model):
    app = create_app(
        RetrievalIndex(laclip_index, model=session_model),
        max_upload_bytes=50_000,
        max_pixels=1_000_000,
    )
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["status"] == status
    return body["error"]["message"]


def test_page_and_info(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and 'id="query"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # self-contained, no CDN
    info = client.get("/api/info").json()
    assert (info["n_images"], info["n_texts"], info["laclip"]["k"]) == (12, 25, 3)


def test_text_search_returns_ranked_images_with_urls(client) -> None:
    body = client.get("/api/search", params={"q": "a round concept 2", "k": 4}).json()
    results = body["results"]
    assert [r["rank"] for r in results] == [1, 2, 3, 4]
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    image = client.get(results[0]["image_url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(image.content)).size == (48, 48)


def test_images_are_served_by_id_only(client) -> None:
    assert "no image" in _error(client.get("/api/image", params={"id": "../../../etc/passwd"}), 404)
    assert "no image" in _error(client.get("/api/image", params={"id": "/etc/hosts"}), 404)
    _error(client.get("/api/image"), 422)


def test_image_upload_searches_texts(client) -> None:
    response = client.post(
        "/api/search-image", params={"k": 3}, files={"file": ("q.png", _png(), "image/png")}
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 3 and all(r["text"] for r in results)


def test_bad_input_gets_clear_errors_and_the_server_keeps_serving(client) -> None:
    assert "image/*" in _error(
        client.post("/api/search-image", files={"file": ("a.txt", b"hello", "text/plain")}), 415
    )
    assert "not a readable image" in _error(
        client.post(
            "/api/search-image", files={"file": ("a.png", b"\x89PNG garbage", "image/png")}
        ),
        400,
    )
    assert "limit" in _error(
        client.post("/api/search-image", files={"file": ("big.png", b"\0" * 200_000, "image/png")}),
        413,
    )
    assert "pixels" in _error(
        client.post(
            "/api/search-image", files={"file": ("wide.png", _png((2000, 1000)), "image/png")}
        ),
        413,
    )
    assert "empty" in _error(
        client.post("/api/search-image", files={"file": ("e.png", b"", "image/png")}), 400
    )
    _error(client.get("/api/search", params={"q": ""}), 422)
    _error(client.get("/api/search", params={"q": "   "}), 400)
    _error(client.get("/api/search", params={"q": "x", "k": 10_000}), 422)
    assert client.get("/api/search", params={"q": "still here"}).status_code == 200


def test_explain_returns_crops_behind_the_score(client) -> None:
    hit = client.get("/api/search", params={"q": "twin", "k": 1}).json()["results"][0]
    body = client.get("/api/explain", params={"id": hit["image_id"], "q": "twin"}).json()
    assert body["score"] == pytest.approx(hit["score"], abs=1e-5)
    assert len(body["crops"]) == 3 and sum(c["weight"] for c in body["crops"]) == pytest.approx(
        1.0, abs=1e-5
    )
    assert body["image_url"].startswith("/api/image?id=")
    _error(client.get("/api/explain", params={"id": "nope", "q": "x"}), 404)


def test_live_server_survives_a_huge_upload(live_server) -> None:
    """Over real HTTP: the size is refused from the header, then normal queries work."""
    with httpx.Client(base_url=live_server, timeout=30) as http:
        huge = http.post(
            "/api/search-image", files={"file": ("huge.png", b"\0" * 5_000_000, "image/png")}
        )
        assert _error(huge, 413)
        assert http.get("/api/search", params={"q": "round"}).json()["results"]
