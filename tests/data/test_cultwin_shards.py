"""CulTwin as WebDataset-style tar shards: round trip, bad members, damaged shards, consumers."""

from __future__ import annotations

import io
import json
import pickle
import tarfile
from pathlib import Path

import pytest
import torch
from torchvision.transforms.functional import to_tensor

from cultureclip.data.cultwin import (
    SHARD_CACHE,
    SHARD_MANIFEST,
    CulTwinFormatError,
    CulTwinLoad,
    CulTwinShardError,
    TwinRecord,
    read_cultwin,
    write_cultwin_shards,
)
from cultureclip.data.twin_dataset import TwinDataset
from cultureclip.testing import write_toy_cultwin

IMAGE_FIELDS = {"pos_image", "neg_image"}


def _without_images(record: TwinRecord) -> dict[str, object]:
    return record.model_dump(exclude=IMAGE_FIELDS)


def _members(shard: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(shard) as tar:
        return [(m, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]


def _write_tar(shard: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(shard, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    return write_toy_cultwin(tmp_path / "toy", n_pairs=8)


@pytest.fixture
def shard_dir(jsonl: Path, tmp_path: Path) -> Path:
    """The toy set as shards of 3 records: cultwin-000000 .. cultwin-000002."""
    load = read_cultwin(jsonl)
    write_cultwin_shards(load.records, tmp_path / "shards", image_root=load.root, shard_size=3)
    return tmp_path / "shards"


def test_round_trip_jsonl_to_shards(jsonl: Path, tmp_path: Path) -> None:
    original = read_cultwin(jsonl)
    out = tmp_path / "shards"
    shards = write_cultwin_shards(original.records, out, image_root=original.root, shard_size=3)
    assert [s.name for s in shards] == [
        "cultwin-000000.tar",
        "cultwin-000001.tar",
        "cultwin-000002.tar",
    ]
    manifest = json.loads((out / SHARD_MANIFEST).read_text())
    assert manifest["records"] == 8
    assert [(e["name"], e["records"]) for e in manifest["shards"]] == [
        ("cultwin-000000.tar", 3),
        ("cultwin-000001.tar", 3),
        ("cultwin-000002.tar", 2),
    ]
    # The record comes first (a streaming reader meets it before the images); webdataset
    # writes a sample's other members in sorted order.
    assert [m.name for m, _ in _members(shards[0])][:3] == [
        "toy-0000.json",
        "toy-0000.neg.png",
        "toy-0000.pos.png",
    ]

    loaded = read_cultwin(out, check_images=True)
    assert not loaded.errors
    assert [_without_images(r) for r in loaded.records] == [
        _without_images(r) for r in original.records
    ]
    assert loaded.records[4].pos_image == "toy-0004.pos.png"
    assert not (out / SHARD_CACHE).exists(), "images are extracted lazily, not on read"
    for before, after in zip(original.records, loaded.records, strict=True):
        for name in IMAGE_FIELDS:
            source = original.image_path(getattr(before, name))
            extracted = loaded.image_path(getattr(after, name))
            assert source is not None and extracted is not None
            assert extracted.read_bytes() == source.read_bytes()
    cached = sorted(p.name for p in (out / SHARD_CACHE).iterdir())
    assert [name.rsplit("-", 1)[0] for name in cached] == [s.stem for s in shards]  # no .tmp left
    # A single shard reads on its own.
    assert [r.id for r in read_cultwin(shards[2]).records] == ["toy-0006", "toy-0007"]
    # Shards are a pure function of the records: rewriting gives the same bytes.
    again = write_cultwin_shards(original.records, tmp_path / "again", image_root=jsonl.parent)
    single = write_cultwin_shards(original.records, tmp_path / "single", image_root=original)
    assert again[0].read_bytes() == single[0].read_bytes()


def test_resharding_from_shards_replaces_old_shards(shard_dir: Path, jsonl: Path) -> None:
    load = read_cultwin(shard_dir)
    shards = write_cultwin_shards(load.records, shard_dir, image_root=load, shard_size=8)
    assert sorted(p.name for p in shard_dir.glob("cultwin-*.tar")) == ["cultwin-000000.tar"]
    assert shards == [shard_dir / "cultwin-000000.tar"]
    resharded = read_cultwin(shard_dir)
    original = read_cultwin(jsonl)
    assert [r.model_dump() for r in resharded.records] == [r.model_dump() for r in load.records]
    path = resharded.image_path(resharded.records[7].neg_image)
    assert path is not None
    assert path.read_bytes() == (jsonl.parent / original.records[7].neg_image).read_bytes()  # type: ignore[operator]


def test_sample_keys_have_no_dots_and_stay_unique(jsonl: Path, tmp_path: Path) -> None:
    records = read_cultwin(jsonl).records[:3]
    ids = ["JP.castle/1", "JP_castle_1", "JP.castle.1"]
    renamed = [r.model_copy(update={"id": new}) for r, new in zip(records, ids, strict=True)]
    (shard,) = write_cultwin_shards(renamed, tmp_path / "s", image_root=jsonl.parent)
    jsons = [m.name for m, _ in _members(shard) if m.name.endswith(".json")]
    assert jsons == ["JP_castle_1.json", "JP_castle_1_1.json", "JP_castle_1_2.json"]
    loaded = read_cultwin(tmp_path / "s")
    assert [r.id for r in loaded.records] == ids
    assert loaded.records[2].pos_image == "JP_castle_1_2.pos.png"
    with pytest.raises(ValueError, match="duplicate record id"):
        write_cultwin_shards(records + records[:1], tmp_path / "d", image_root=jsonl.parent)


def test_malformed_members_are_reported_and_the_rest_loads(shard_dir: Path) -> None:
    shard = shard_dir / "cultwin-000001.tar"  # toy-0003 .. toy-0005
    members = []
    for info, data in _members(shard):
        if info.name == "toy-0004.json":
            data = b"{not json at all"
        elif info.name == "toy-0005.json":
            record = json.loads(data)
            del record["neg_concept"]
            data = json.dumps(record).encode()
        members.append((info.name, data))
    _write_tar(shard, members)
    # The hand-edited shard no longer matches the manifest; without one, shards are globbed.
    (shard_dir / SHARD_MANIFEST).unlink()

    load = read_cultwin(shard_dir)
    assert [r.id for r in load.records] == [f"toy-{i:04d}" for i in (0, 1, 2, 3, 6, 7)]
    errors = {bad.line: bad for bad in load.errors}
    assert set(errors) == {5, 6}
    assert errors[5].where == "cultwin-000001.tar:toy-0004.json"
    assert errors[5].error.startswith("cultwin-000001.tar:toy-0004.json: not valid JSON")
    assert errors[5].raw == "{not json at all"
    assert "cultwin-000001.tar:toy-0005.json: neg_concept: Field required" in errors[6].error
    assert "line 5: cultwin-000001.tar:toy-0004.json: not valid JSON" in load.error_report()
    # Images of the good records of the damaged shard still resolve.
    path = load.image_path(load.records[3].pos_image)
    assert path is not None and path.name == "toy-0003.pos.png" and path.exists()
    with pytest.raises(CulTwinFormatError, match=r"2 bad record\(s\)"):
        read_cultwin(shard_dir, strict=True)


def test_sample_without_record_and_duplicate_key(shard_dir: Path) -> None:
    shard = shard_dir / "cultwin-000002.tar"  # toy-0006, toy-0007
    kept = [(i.name, d) for i, d in _members(shard) if i.name != "toy-0006.json"]
    duplicate = [(i.name, d) for i, d in _members(shard_dir / "cultwin-000000.tar")][:3]
    _write_tar(shard, kept + duplicate)
    (shard_dir / SHARD_MANIFEST).unlink()
    load = read_cultwin(shard_dir)
    assert len(load) == 7
    assert [(bad.line, bad.where) for bad in load.errors] == [
        (7, "cultwin-000002.tar:toy-0006"),
        (9, "cultwin-000002.tar:toy-0000.json"),
    ]
    assert "no toy-0006.json record" in load.errors[0].error
    assert "duplicate sample key 'toy-0000'" in load.errors[1].error


def _damage(shard: Path, how: str) -> None:
    data = shard.read_bytes()
    infos = [info for info, _ in _members(shard)]
    second_sample = next(i for i in infos if i.name.endswith(".json") and i.offset > 0)
    if how == "cut-mid-image":
        image = next(i for i in infos if i.name.endswith(".png"))
        data = data[: image.offset_data + 10]
    elif how == "cut-at-sample-boundary":
        data = data[: second_sample.offset]
    elif how == "garbled-header":
        start = second_sample.offset
        data = data[:start] + b"x" * 512 + data[start + 512 :]
    else:
        data = b"this is not a tar file\n" * 40
    shard.write_bytes(data)


@pytest.mark.parametrize(
    "how", ["cut-mid-image", "cut-at-sample-boundary", "garbled-header", "not-a-tar"]
)
def test_damaged_shard_raises_naming_the_file(shard_dir: Path, how: str) -> None:
    shard = shard_dir / "cultwin-000001.tar"
    _damage(shard, how)
    for source in (shard_dir, shard):
        with pytest.raises(CulTwinShardError, match=r"cultwin-000001\.tar") as info:
            read_cultwin(source)
        assert "truncated" in str(info.value)
    # Without the manifest the tar itself gives the damage away.
    (shard_dir / SHARD_MANIFEST).unlink()
    with pytest.raises(CulTwinShardError, match=r"cultwin-000001\.tar: not a readable tar shard"):
        read_cultwin(shard_dir)


def test_shard_missing_from_manifest_is_an_error(shard_dir: Path) -> None:
    (shard_dir / "cultwin-000002.tar").unlink()
    with pytest.raises(CulTwinShardError, match=r"cultwin-000002\.tar: listed in"):
        read_cultwin(shard_dir)


def _to_tensors(images: list) -> torch.Tensor:
    return torch.stack([to_tensor(image) for image in images])


def test_twin_dataset_over_shards_matches_jsonl(jsonl: Path, shard_dir: Path) -> None:
    from_jsonl = TwinDataset(read_cultwin(jsonl), _to_tensors, seed=5)
    load = read_cultwin(shard_dir)
    # DataLoader workers get a pickled copy; it must still find (or extract) the images.
    from_shards = TwinDataset(pickle.loads(pickle.dumps(load)), _to_tensors, seed=5)
    assert len(from_shards) == len(from_jsonl) == 8
    for index in range(8):
        expected, got = from_jsonl[index], from_shards[index]
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(got[key], value), (index, key)
            else:
                assert got[key] == value, (index, key)


def test_twins_benchmark_on_shards_matches_jsonl(
    jsonl: Path, shard_dir: Path, tmp_path: Path
) -> None:
    from cultureclip.eval import evaluate
    from cultureclip.models.registry import create_model
    from cultureclip.testing import build_tiny_hf_model

    model = create_model(f"hf:{build_tiny_hf_model(tmp_path / 'clip', 'clip')}")
    on_jsonl = evaluate(model, "twins", data=jsonl)
    on_shards = evaluate(model, "twins", data=shard_dir)
    assert on_shards.metrics == on_jsonl.metrics
    assert on_shards.n == on_jsonl.n == 16
    on_load = evaluate(model, "twins", data=read_cultwin(shard_dir, cache_dir=tmp_path / "c"))
    assert on_load.metrics == on_jsonl.metrics
    assert any((tmp_path / "c").iterdir())


def test_load_without_shards_is_unchanged(jsonl: Path) -> None:
    load = read_cultwin(jsonl)
    assert isinstance(load, CulTwinLoad) and not load.shard_images
    assert load.image_path("images/0000_pos.png") == jsonl.parent / "images/0000_pos.png"


def test_shard_directories_are_recognised_by_training_and_collections(tmp_path: Path) -> None:
    from cultureclip.data.collections import detect_layout, load_collection
    from cultureclip.train.config import DataSettings
    from cultureclip.train.data import detect_kind

    source = read_cultwin(write_toy_cultwin(tmp_path / "toy", n_pairs=4))
    shards = tmp_path / "shards"
    write_cultwin_shards(source.records, shards, image_root=source.root, shard_size=3)
    assert detect_kind(DataSettings(path=str(shards))) == "twin"
    assert detect_layout(shards) == "cultwin"
    assert len(load_collection(shards).images) == 8
