"""Search latency of ``cultureclip serve`` under concurrent clients, with and without uploads.

Builds a small LACLIP index (a random CLIP built offline, same code path as hub
checkpoints, unless ``--index`` names one), starts the server in a subprocess on
127.0.0.1, and for 1, 10 and 50 concurrent clients sends a bounded number of text
searches (``--requests-per-client``, at most ``--max-requests`` in all), first alone and
then while ``--uploads`` image → text uploads (``--upload-px``² PNGs) are kept in flight.
Prints one table: p50/p95 search latency, requests answered, 503 (queue full) and other
errors. Nothing leaves the machine.

    python benchmarks/server_load.py [--clients 1,10,50] [--uploads 2] [--upload-px 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw

SERVER = """
import sys, uvicorn
from cultureclip.retrieval.server import create_app
app = create_app(sys.argv[1], workers=int(sys.argv[3]), max_pending=int(sys.argv[4]))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def build_index(root: Path, images: int, hidden: int, layers: int) -> Path:
    from cultureclip.data.collections import write_chinese_clip
    from cultureclip.data.pairs import PairCollection
    from cultureclip.retrieval import IndexConfig, LaclipSettings
    from cultureclip.retrieval import build_index as build
    from cultureclip.testing import build_tiny_hf_model

    model = build_tiny_hf_model(root / "model", image_size=64, hidden=hidden, layers=layers)
    rng = np.random.default_rng(0)
    sources = []
    for _ in range(images):
        image = Image.new("RGB", (160, 120), tuple(int(v) for v in rng.integers(0, 255, 3)))
        ImageDraw.Draw(image).ellipse([20, 20, 100, 100], fill=(240, 230, 200))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        sources.append(buffer.getvalue())
    collection = PairCollection(
        [str(i) for i in range(images)],
        sources,
        [str(i) for i in range(images)],
        [f"敦煌壁画 pattern {i}" for i in range(images)],
        [[i] for i in range(images)],
        name="bench",
    )
    write_chinese_clip(root / "data", "test", collection)
    out = root / "index"
    build(
        IndexConfig(
            model=f"hf:{model}",
            data=str(root / "data"),
            split="test",
            out=str(out),
            laclip=LaclipSettings(k=4),
        ),
        progress=False,
    )
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def upload_png(side: int) -> bytes:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


async def run_level(
    url: str, clients: int, per_client: int, max_requests: int, uploads: int, png: bytes
) -> dict[str, object]:
    total = min(clients * per_client, max_requests)
    latencies: list[float] = []
    codes: dict[int, int] = {}
    stop = asyncio.Event()
    upload_count = 0
    limits = httpx.Limits(max_connections=clients + uploads + 4)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:

        async def uploader() -> None:
            nonlocal upload_count
            while not stop.is_set():
                response = await http.post(
                    "/api/search-image", files={"file": ("q.png", png, "image/png")}
                )
                upload_count += response.status_code == 200

        queue = list(range(total))

        async def client() -> None:
            while queue:
                n = queue.pop()
                started = time.perf_counter()
                response = await http.get("/api/search", params={"q": f"pattern {n}", "k": 12})
                codes[response.status_code] = codes.get(response.status_code, 0) + 1
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)

        background = [asyncio.create_task(uploader()) for _ in range(uploads)]
        if uploads:
            await asyncio.sleep(0.3)  # uploads are in flight before the first search
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        wall = time.perf_counter() - started
        stop.set()
        await asyncio.gather(*background)
    ms = np.asarray(latencies) * 1000
    return {
        "clients": clients,
        "uploads": uploads,
        "requests": total,
        "ok": len(latencies),
        "p50": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p95": float(np.percentile(ms, 95)) if len(ms) else float("nan"),
        "rps": len(latencies) / wall,
        "503": codes.get(503, 0),
        "errors": sum(v for k, v in codes.items() if k not in (200, 503)),
        "uploads_done": upload_count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", type=Path, help="An existing index (default: build one).")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--clients", default="1,10,50")
    parser.add_argument("--requests-per-client", type=int, default=8)
    parser.add_argument("--max-requests", type=int, default=200)
    parser.add_argument("--uploads", type=int, default=2, help="Uploads kept in flight.")
    parser.add_argument("--upload-px", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-pending", type=int, default=64)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        index = args.index or build_index(Path(tmp), args.images, args.hidden, args.layers)
        port = free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-c",
                SERVER,
                str(index),
                str(port),
                str(args.workers),
                str(args.max_pending),
            ]
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(url + "/api/health", timeout=2).json()["ready"]:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not become ready")
                time.sleep(0.2)
            png = upload_png(args.upload_px)
            rows = []
            for clients in (int(c) for c in args.clients.split(",")):
                for uploads in (0, args.uploads):
                    rows.append(
                        asyncio.run(
                            run_level(
                                url,
                                clients,
                                args.requests_per_client,
                                args.max_requests,
                                uploads,
                                png,
                            )
                        )
                    )
        finally:
            server.terminate()
            server.wait(timeout=20)

    print(
        f"search latency, {args.workers} model worker(s), queue {args.max_pending}; uploads: "
        f"{args.upload_px}² PNG ({len(png) // 1024} KB) kept in flight"
    )
    header = (
        f"{'clients':>7} {'uploads':>7} {'requests':>8} {'ok':>5} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'req/s':>7} {'503':>5} {'errors':>6} {'uploads done':>12}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['clients']:>7} {r['uploads']:>7} {r['requests']:>8} {r['ok']:>5} "
            f"{r['p50']:>8.1f} {r['p95']:>8.1f} {r['rps']:>7.1f} {r['503']:>5} "
            f"{r['errors']:>6} {r['uploads_done']:>12}"
        )


if __name__ == "__main__":
    main()
