"""Loading pretrained weights by hub id or local folder, with errors a user can act on.

``from_pretrained`` answers a typo'd folder or an unreachable hub with a long traceback
(``HFValidationError``, ``OSError: We couldn't connect ...``). :func:`loading` turns
those into one :class:`~cultureclip.models.base.BackendError` that names the spec and
what was tried.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from cultureclip.core.errors import UserError
from cultureclip.models.base import BackendError


def looks_like_path(name_or_path: str) -> bool:
    """A local path rather than a hub id (``owner/name``)."""
    return (
        name_or_path.startswith(("/", "./", "../", "~", "."))
        or name_or_path.count("/") > 1
        or (os.sep != "/" and os.sep in name_or_path)
        or Path(name_or_path).exists()
    )


def check_local(spec: str, name_or_path: str) -> None:
    """Fails fast, in one line, for a local folder that is not there."""
    if looks_like_path(name_or_path) and not Path(name_or_path).expanduser().exists():
        raise BackendError(f"cannot load model {spec!r}: no such directory {name_or_path}")


@contextlib.contextmanager
def loading(spec: str) -> Iterator[None]:
    """Wraps backend construction: loader failures become one line naming the spec."""
    try:
        yield
    except UserError:
        raise
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = ""
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
            hint = " (HF_HUB_OFFLINE is set: a hub id loads only if it is already cached)"
        raise BackendError(f"cannot load model {spec!r}: {reason}{hint}") from exc
