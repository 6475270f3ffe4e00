"""Fixtures of the retrieval tests: a small Chinese-CLIP collection and indexes over it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from cultureclip.data.collections import load_collection, write_chinese_clip
from cultureclip.data.pairs import PairCollection

torch.set_num_threads(1)


def make_collection(root: Path, n_pairs: int = 6) -> PairCollection:
    """The toy CulTwin set as a collection, plus one text that describes two images."""
    from cultureclip.testing import write_toy_cultwin

    base = load_collection(write_toy_cultwin(root / "toy", n_pairs=n_pairs))
    # Chinese-CLIP ids are integers; a shared text exercises many-to-many relations.
    return PairCollection(
        image_ids=[str(100 + i) for i in range(len(base.images))],
        images=[p.read_bytes() for p in base.images],
        text_ids=[str(i) for i in range(len(base.texts) + 1)],
        texts=[*base.texts, "两个红色的图案"],
        text_to_images=[*base.text_to_images, [0, 3]],
        name="toy",
    )


@pytest.fixture(scope="session")
def toy_collection() -> Callable[[Path], PairCollection]:
    """:func:`make_collection` as a fixture (test modules here are not a package)."""
    return make_collection


@pytest.fixture(scope="session")
def culti_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Chinese-CLIP layout directory with a ``test`` split (12 images, 25 texts)."""
    root = tmp_path_factory.mktemp("culti")
    write_chinese_clip(root / "data", "test", make_collection(root))
    return root / "data"


@pytest.fixture(scope="session")
def session_model(tiny_clip_dir: Path):
    """One tiny CLIP shared by read-only tests (nothing trains it)."""
    from cultureclip.models.registry import create_model

    return create_model(f"hf:{tiny_clip_dir}").eval()


@pytest.fixture(scope="session")
def laclip_index(
    tmp_path_factory: pytest.TempPathFactory, culti_dir: Path, tiny_clip_dir: Path, session_model
) -> Path:
    """A LACLIP index (k=3 crops) over ``culti_dir``."""
    from cultureclip.retrieval import IndexConfig, LaclipSettings, build_index

    out = tmp_path_factory.mktemp("index") / "laclip"
    config = IndexConfig(
        model=f"hf:{tiny_clip_dir}",
        data=str(culti_dir),
        split="test",
        out=str(out),
        laclip=LaclipSettings(k=3),
    )
    build_index(config, model=session_model, progress=False)
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def live_server(laclip_index: Path, session_model) -> Iterator[str]:
    """The search app under uvicorn on a free loopback port, in a thread; yields its base URL."""
    import uvicorn

    from cultureclip.retrieval import RetrievalIndex
    from cultureclip.retrieval.server import create_app

    app = create_app(RetrievalIndex(laclip_index, model=session_model), max_upload_bytes=200_000)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
