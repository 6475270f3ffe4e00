"""CulTwin as a hub dataset: ``datasets.load_dataset(folder)`` with decoded image columns."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from cultureclip.data.cultwin import read_cultwin, write_cultwin
from cultureclip.publish import write_cultwin_dataset
from cultureclip.testing import write_toy_cultwin


def _toy(folder: Path, n_pairs: int = 5) -> Path:
    jsonl = write_toy_cultwin(folder, n_pairs=n_pairs)
    records = read_cultwin(jsonl).records
    # An annotation a pipeline added (kept as an extra key) and a record without its twin image.
    records[0] = records[0].model_copy(
        update={"split": "train", "quality": {"pos": {"fidelity": 5}}}
    )
    records[1] = records[1].model_copy(update={"neg_image": None})
    return write_cultwin(jsonl, records).parent


def test_load_dataset_reads_the_folder_with_decoded_images(tmp_path: Path) -> None:
    import datasets
    from huggingface_hub import DatasetCard

    folder = _toy(tmp_path / "toy")
    write_cultwin_dataset(folder, name="toy-twins", license="cc-by-4.0")

    twins = datasets.load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "cache"))
    assert isinstance(twins.features["pos_image"], datasets.Image)
    assert len(twins) == 5
    source = read_cultwin(folder).records
    for row, record in zip(twins, source, strict=True):
        assert row["id"] == record.id and row["pos_captions"] == record.pos_captions
        assert isinstance(row["pos_image"], Image.Image)
        original = np.asarray(Image.open(folder / record.pos_image))
        assert np.array_equal(np.asarray(row["pos_image"]), original)
    assert twins[1]["neg_image"] is None
    card = DatasetCard.load(folder / "README.md")
    assert card.data.license == "cc-by-4.0" and card.data.pretty_name == "toy-twins"
    assert card.data.size_categories == "n<1K"


def test_read_cultwin_reads_the_hub_layout_alone(tmp_path: Path) -> None:
    from cultureclip.data.cultwin import is_cultwin_path
    from cultureclip.data.twin_dataset import TwinDataset

    folder = _toy(tmp_path / "toy")
    original = read_cultwin(folder)
    hub = tmp_path / "downloaded"
    write_cultwin_dataset(original, hub)
    shutil.rmtree(folder)  # the images now live only inside the Parquet file

    assert is_cultwin_path(hub)
    load = read_cultwin(hub, check_images=True)
    assert not load.errors
    assert [r.model_dump(exclude={"pos_image", "neg_image"}) for r in load.records] == [
        r.model_dump(exclude={"pos_image", "neg_image"}) for r in original.records
    ]
    assert load.records[0].model_extra == {"split": "train"}
    assert load.records[1].neg_image is None
    pixels = np.asarray(Image.open(load.image_path(load.records[2].pos_image)))
    assert pixels.shape == (48, 48, 3)
    # Training reads it as it reads any CulTwin set (the pair without its twin image skipped).
    twins = TwinDataset(load, transform=lambda images: [np.asarray(i) for i in images], seed=0)
    assert len(twins) == 4
    assert twins[0]["neg_image"].shape == (48, 48, 3)


def test_two_sets_in_folders_of_one_name_do_not_share_datasets_cache(tmp_path: Path) -> None:
    """datasets keys a local folder's cache by its name and its card's metadata: the card's
    dataset_info (sizes) keeps two different sets apart."""
    import datasets

    for parent, n_pairs in (("a", 3), ("b", 4)):
        write_cultwin_dataset(write_toy_cultwin(tmp_path / parent / "toy", n_pairs=n_pairs).parent)
    cache = str(tmp_path / "cache")
    assert (
        len(datasets.load_dataset(str(tmp_path / "a" / "toy"), split="train", cache_dir=cache)) == 3
    )
    assert (
        len(datasets.load_dataset(str(tmp_path / "b" / "toy"), split="train", cache_dir=cache)) == 4
    )
