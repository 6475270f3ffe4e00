"""Crash-safe files: torn tails, full disks, umask, unreadable lines, stale temp files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cultureclip.core.errors import DiskFullError, InputError, UserError
from cultureclip.core.io import (
    append_jsonl,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    read_json,
    read_jsonl,
    remove_stale_temp_files,
)
from cultureclip.core.store import ResultStore


def test_a_torn_tail_is_cut_before_the_next_append(tmp_path: Path) -> None:
    store_file = tmp_path / "captions.jsonl"
    store_file.write_text('{"key": "a", "value": 1}\n{"key": "b", "val')  # cut mid-record
    store = ResultStore(tmp_path, "captions")
    assert "a" in store and "b" not in store  # the torn record is redone, not trusted
    store.add({"key": "b", "value": 2})
    store.add({"key": "c", "value": 3})
    lines = store_file.read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["a", "b", "c"]
    assert ResultStore(tmp_path, "captions").get("b") == {"key": "b", "value": 2}


def test_a_corrupt_middle_line_is_skipped_by_stores_and_named_by_readers(tmp_path: Path) -> None:
    # What older versions left: a torn record glued to the next one.
    path = tmp_path / "twins.jsonl"
    path.write_text('{"key": "a"}\n{"key": "b", "x{"key": "c"}\n{"key": "d"}\n')
    assert sorted(ResultStore(tmp_path, "twins")._records) == ["a", "d"]
    with pytest.raises(InputError, match=r"twins\.jsonl:2: not valid JSON"):
        read_jsonl(path)


def test_invalid_utf8_names_the_line_and_keeps_the_message_whole(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_bytes(b'{"id": 1}\n{"id": 2, "q": "caf\xe9"}\n{"id": 3}\n')
    with pytest.raises(InputError) as info:
        read_jsonl(path)
    assert str(info.value).startswith(f"{path}:2: not UTF-8")
    assert [r["id"] for r in read_jsonl(path, on_error="skip")] == [1, 3]
    bad_json = tmp_path / "config.json"
    bad_json.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(InputError, match="not UTF-8"):
        read_json(bad_json)


FILL_THE_DISK = textwrap.dedent(
    """
    import resource, signal, sys
    from pathlib import Path
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    from cultureclip.core.errors import DiskFullError
    from cultureclip.core.store import ResultStore
    store = ResultStore(Path(sys.argv[1]), "captions")
    try:
        for i in range(1000):
            store.add({"key": f"k{i:04d}", "text": "x" * 150})
    except DiskFullError as exc:
        print(f"stopped after {i}: {exc}")
        sys.exit(3)
    """
)


def test_a_write_cut_by_a_full_disk_loses_nothing_that_was_finished(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", FILL_THE_DISK, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 3, result.stderr[-2000:]
    assert "file size limit reached while writing" in result.stdout
    assert "captions.jsonl" in result.stdout and "free there" in result.stdout
    written = int(result.stdout.split()[2].rstrip(":"))
    store_file = tmp_path / "captions.jsonl"
    assert store_file.read_bytes().endswith(b"\n")  # no half record left behind
    # Space is back: the next run continues and every record reads.
    store = ResultStore(tmp_path, "captions")
    assert len(store) == written
    store.add({"key": "after", "text": "y"})
    assert len(read_jsonl(store_file)) == written + 1


def test_disk_full_from_atomic_writers_is_a_user_error(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
        from cultureclip.core.io import atomic_write_bytes
        try:
            atomic_write_bytes(sys.argv[1], b"z" * 10_000)
        except Exception as exc:
            print(type(exc).__name__, exc)
        """
    )
    target = tmp_path / "images" / "big.png"
    out = subprocess.run(
        [sys.executable, "-c", script, str(target)], capture_output=True, text=True, timeout=60
    ).stdout
    assert out.startswith("DiskFullError") and str(target) in out
    assert not target.exists() and list(target.parent.iterdir()) == []  # no temp file left
    assert issubclass(DiskFullError, UserError)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        paths = [
            atomic_write_text(tmp_path / "a.txt", "x"),
            atomic_write_json(tmp_path / "b.json", {"x": 1}),
        ]
        with atomic_path(tmp_path / "c.npz") as tmp:
            tmp.write_bytes(b"data")
        paths.append(tmp_path / "c.npz")
        append_jsonl(tmp_path / "d.jsonl", [{"x": 1}])
        paths.append(tmp_path / "d.jsonl")
    finally:
        os.umask(old)
    for path in paths:
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_stale_temp_files_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    stale = [tmp_path / ".step_00000010.pt.k3j4l5m6.pt", tmp_path / ".images-3.npz.a1b2c3d4.npz"]
    keep = [tmp_path / "step_00000010.pt", tmp_path / ".hidden-config", tmp_path / "notes.txt"]
    for path in stale + keep:
        path.write_text("x")
    removed = remove_stale_temp_files(tmp_path, "step_*.pt")
    assert removed == [stale[0]] and stale[1].exists()
    assert remove_stale_temp_files(tmp_path) == [stale[1]]
    assert all(path.exists() for path in keep)


BAD_BYTE = b'{"id": "x", "text": "caf\xe9"}\n'


def test_every_jsonl_reader_names_the_line_of_a_bad_byte(tmp_path: Path) -> None:
    """Readers of user JSONL go through one line reader: a bad byte is a one-line
    InputError naming file and line (or, for item sets, one skipped item), never a
    UnicodeDecodeError traceback."""
    from cultureclip.data.collections import load_collection
    from cultureclip.eval.scorers.openended import read_open_items
    from cultureclip.synth.corpus import read_corpus
    from cultureclip.vlm.train import read_chat_export

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(b'{"concept": "kimono", "country": "JP"}\n' + BAD_BYTE)
    chat = tmp_path / "instruct.jsonl"
    chat.write_bytes(BAD_BYTE)
    culti = tmp_path / "culti"
    culti.mkdir()
    (culti / "test_imgs.tsv").write_text("1\taGVsbG8=\n")
    (culti / "test_texts.jsonl").write_bytes(BAD_BYTE)
    for read, path in [
        (read_corpus, corpus),
        (read_chat_export, chat),
        (lambda p: load_collection(p, "test"), culti),
    ]:
        with pytest.raises(InputError, match=r":[12]: .*not UTF-8"):
            read(path)
    items = tmp_path / "open.jsonl"
    items.write_bytes(BAD_BYTE)
    _, errors, _ = read_open_items(items)
    assert [(e.line, e.error) for e in errors] == [(1, "not UTF-8 (byte 24 of the line)")]
