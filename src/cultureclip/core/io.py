"""Atomic, crash-safe file writes and small JSON/JSONL helpers.

Every output that a long stage writes goes through :func:`atomic_write_bytes` or
:func:`atomic_path`: the data lands in a temporary file in the same directory, is
fsynced, and is renamed over the target, so a process killed at any moment leaves either
the old file or the new one, never a torn one. Files get the permissions the umask asks
for (``mkstemp`` alone would make them 0600, unreadable in a shared lab directory).

Append-only JSONL files (result stores, failure logs, metrics) cannot be renamed into
place; :func:`append_jsonl` instead repairs a torn last line (a write cut by a kill or a
full disk) before it appends, so one cut write never corrupts the next record.

A full disk is reported as :class:`~cultureclip.core.errors.DiskFullError` naming the file
and the space left, instead of a bare ``OSError``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from cultureclip.core.errors import DiskFullError, InputError

logger = logging.getLogger(__name__)

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def free_space(path: str | os.PathLike[str]) -> str:
    """Free space of the file system holding ``path``, human-readable."""
    try:
        free = float(shutil.disk_usage(Path(path)).free)
    except OSError:
        return "unknown"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if free < 1024 or unit == "TiB":
            return f"{free:.0f} {unit}" if unit == "B" else f"{free:.1f} {unit}"
        free /= 1024
    return "unknown"


@contextlib.contextmanager
def disk_full_as_user_error(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turns ENOSPC/EDQUOT/EFBIG while writing ``path`` into a one-line :class:`DiskFullError`."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _DISK_FULL or isinstance(exc, DiskFullError):
            raise
        reason = (
            "file size limit reached" if exc.errno == errno.EFBIG else "no space left on device"
        )
        raise DiskFullError(
            f"{reason} while writing {path} ({free_space(Path(path).parent)} free there); "
            "free some space and rerun: finished work is kept"
        ) from exc


def remove_stale_temp_files(directory: str | os.PathLike[str], name_glob: str = "*") -> list[Path]:
    """Deletes temp files that :func:`atomic_path` / :func:`atomic_write_bytes` left behind when
    a process was killed mid-write, for targets matching ``name_glob`` in ``directory``.

    Call it at the start of a stage that is the only writer of ``directory``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for candidate in directory.glob(f".{name_glob}.*"):
        if candidate.is_file() and _TEMP_NAME.match(candidate.name):
            with contextlib.suppress(FileNotFoundError):
                candidate.unlink()
                removed.append(candidate)
    if removed:
        logger.info("removed %d stale temp file(s) in %s", len(removed), directory)
    return removed


# mkstemp names: .<target>.<8 random characters><suffix>
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}(\.[A-Za-z0-9]+)?$")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(
        path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n"
    )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields a temporary path to write with any library; renamed to ``path`` on success."""
    path = Path(path)
    with disk_full_as_user_error(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix or ".tmp"
        )
        try:
            os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp alone makes 0600
        finally:
            os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
            # Libraries that write by name (torch.save, np.savez) skip our fsync.
            with contextlib.suppress(FileNotFoundError), open(tmp_path, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp_path, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()


def read_json(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None


def repair_torn_tail(path: str | os.PathLike[str]) -> int:
    """Cuts a last line that has no newline (a write cut short); returns the bytes removed."""
    path = Path(path)
    try:
        handle = open(path, "r+b")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return 0
    with handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return 0
        # Walk back to the last newline in blocks; records are small, files may be large.
        keep = 0
        for end in range(size, 0, -65536):
            start = max(0, end - 65536)
            handle.seek(start)
            cut = handle.read(end - start).rfind(b"\n")
            if cut != -1:
                keep = start + cut + 1
                break
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
    removed = size - keep
    logger.warning(
        "%s: dropped a torn last line (%d bytes) left by an interrupted write", path, removed
    )
    return removed


def append_jsonl(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> None:
    """Appends whole lines and fsyncs, after cutting a torn last line an earlier cut write left."""
    path = Path(path)
    payload = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
    if not payload:
        return
    with disk_full_as_user_error(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        repair_torn_tail(path)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            data = memoryview(payload.encode("utf-8"))
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        except OSError:
            # Leave no half record behind for the next append: truncation frees space
            # rather than needing it, so this works on a full disk too.
            with contextlib.suppress(OSError):
                repair_torn_tail(path)
            raise
        finally:
            os.close(fd)


def jsonl_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any] | str, bool]]:
    """``(line_number, record or problem, complete)`` for every non-blank line of a JSONL
    file, read line by line in bytes: a line that is not UTF-8 or not a JSON object gives
    the problem as text, so one bad byte costs one line. ``complete`` is False for a last
    line without newline (a write cut short)."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if raw.strip():
                yield number, parse_json_line(raw), raw.endswith(b"\n")


def parse_json_line(raw: bytes) -> dict[str, Any] | str:
    """One JSONL line as an object, or what is wrong with it (not UTF-8, not JSON, no object)."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return f"not UTF-8 (byte {exc.start} of the line)"
    except ValueError as exc:
        return f"not valid JSON: {exc}"
    if not isinstance(record, dict):
        return f"expected an object, got {type(record).__name__}"
    return record


def iter_jsonl(
    path: str | os.PathLike[str],
    *,
    on_error: Literal["raise", "skip"] = "raise",
    tolerate_torn_tail: bool = True,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields ``(line_number, record)`` of a JSONL file (see :func:`jsonl_lines`).

    A bad line raises :class:`InputError` naming the file and line (``on_error="raise"``),
    or is logged and skipped (``"skip"``). With ``tolerate_torn_tail``, a last line without
    newline that does not parse (a write cut by a kill) is ignored with a warning.
    """
    path = Path(path)
    for number, parsed, complete in jsonl_lines(path):
        if isinstance(parsed, dict):
            yield number, parsed
        elif not complete and tolerate_torn_tail:
            logger.warning("%s:%d: ignored a torn last line (%s)", path, number, parsed)
        elif on_error == "skip":
            logger.warning("%s:%d: skipped, %s", path, number, parsed)
        else:
            raise InputError(f"{path}:{number}: {parsed}")


def read_jsonl(
    path: str | os.PathLike[str], *, on_error: Literal["raise", "skip"] = "raise"
) -> list[dict[str, Any]]:
    """Reads a JSONL file (see :func:`iter_jsonl`), a torn last line ignored; a missing
    file reads as empty."""
    path = Path(path)
    if not path.exists():
        return []
    return [record for _, record in iter_jsonl(path, on_error=on_error)]


def write_jsonl(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> Path:
    text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
    return atomic_write_text(path, text)


def stable_hash(*parts: Any, length: int = 16) -> str:
    """A short deterministic hash of JSON-serialisable parts (the key of resumable work items)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:length]
