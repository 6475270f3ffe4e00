"""Loading a hub-layout dataset: original image bytes (now) vs decode + PNG re-encode (before).

Writes a local folder in the exact hub layout (``README.md`` with ``dataset_info`` and
``data/test-00000-of-00001.parquet`` with a ``datasets.Image`` column) holding ``--images``
640×480 JPEGs, then loads it the way ``cultureclip eval`` does
(``cultureclip.eval.source.read_rows``: ``Image(decode=False)``, bytes
kept) and the way it did before (``load_dataset`` decoding every image to PIL, converted to
RGB and re-encoded as PNG in memory). Prints the MB held and the seconds of each.

    python benchmarks/eval_hub_loading.py [--images 200]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image


def write_folder(root: Path, n: int) -> None:
    import datasets

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        small = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((640, 480), Image.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        rows.append({"image": {"bytes": buffer.getvalue(), "path": f"{i}.jpg"}, "label": i % 4})
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    dataset = datasets.Dataset.from_list(rows, features=features, split=datasets.Split("test"))
    (root / "data").mkdir(parents=True)
    dataset.to_parquet(str(root / "data" / "test-00000-of-00001.parquet"))
    info = dataset.info._to_yaml_dict()
    info["splits"] = [{"name": "test", "num_bytes": 0, "num_examples": n}]
    card = {
        "dataset_info": info,
        "configs": [
            {"config_name": "default", "data_files": [{"split": "test", "path": "data/test-*"}]}
        ],
    }
    (root / "README.md").write_text("---\n" + yaml.safe_dump(card, sort_keys=False) + "---\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    import datasets

    from cultureclip.eval.source import read_rows

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "hub"
        write_folder(root, args.images)
        on_disk = sum(p.stat().st_size for p in (root / "data").iterdir()) / 1e6
        started = time.perf_counter()
        kept = [row["image"] for row in read_rows(str(root), "test")[0]]
        now = time.perf_counter() - started
        started = time.perf_counter()
        before = []
        for row in datasets.load_dataset(str(root), split="test"):
            buffer = io.BytesIO()
            row["image"].convert("RGB").save(buffer, format="PNG")
            before.append(buffer.getvalue())
        then = time.perf_counter() - started
    print(f"{args.images} JPEGs, {on_disk:.1f} MB of parquet")
    print(f"now    (original bytes): {sum(map(len, kept)) / 1e6:6.1f} MB held, {now:6.2f} s")
    print(f"before (PNG re-encode):  {sum(map(len, before)) / 1e6:6.1f} MB held, {then:6.2f} s")


if __name__ == "__main__":
    main()
