"""A CJK web font for the search page: a subset of a CJK font found on the server.

A curator's computer may have no Chinese font (the text then shows as empty boxes). The
server sends a subset of one it has (only the characters of the index's texts, as WOFF),
which the page uses after the computer's own CJK fonts. Looked up in order: the
``CULTURECLIP_CJK_FONT`` environment variable, the ``cvttf-notosanscjk-regular`` PyPI
package (``pip install 'cultureclip[cjk]'``), ``fc-list :lang=zh`` and a few Debian paths
(``fonts-noto-cjk``, ``fonts-wqy-microhei``, ``fonts-wqy-zenhei``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger(__name__)

ENV_VAR = "CULTURECLIP_CJK_FONT"
_DEBIAN_PATHS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
)
#: characters of the page itself that may need the font
PAGE_TEXT = "敦煌壁画中的飞天"


def find_cjk_font() -> Path | None:
    """The first CJK font file found (see the module docstring), or None."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        return Path(configured) if Path(configured).is_file() else None
    with contextlib.suppress(ImportError, FileNotFoundError):
        import cvttf_NotoSansCJK_Regular as package

        return Path(package.get_TTF_path())
    if shutil.which("fc-list"):
        try:
            listed = subprocess.run(
                ["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=10
            ).stdout
        except (OSError, subprocess.SubprocessError):
            listed = ""
        files = sorted(line.strip().rstrip(":") for line in listed.splitlines() if line.strip())
        if files:
            return Path(files[0])
    return next((Path(p) for p in _DEBIAN_PATHS if Path(p).is_file()), None)


def subset_woff(font_path: Path, texts: Iterable[str]) -> bytes:
    """A WOFF with just the glyphs of the characters in ``texts``."""
    from fontTools import subset
    from fontTools.ttLib import TTFont

    characters = sorted({c for text in texts for c in text if ord(c) > 0x2E7F} | set(PAGE_TEXT))
    options = subset.Options()
    options.layout_features = ["*"]
    options.name_IDs = ["*"]
    number = 0 if font_path.suffix.lower() in (".ttc", ".otc") else -1
    font = TTFont(str(font_path), fontNumber=number, lazy=False)
    subsetter = subset.Subsetter(options)
    subsetter.populate(text="".join(characters))
    subsetter.subset(font)
    font.flavor = "woff"
    buffer = io.BytesIO()
    font.save(buffer)
    logger.info(
        "CJK web font: %d characters from %s, %d KB",
        len(characters),
        font_path.name,
        len(buffer.getvalue()) // 1024,
    )
    return buffer.getvalue()


def main() -> None:
    """``python -m cultureclip.retrieval.fonts FONT < characters > subset.woff``: the server
    subsets in a child process, so fontTools' pure-Python work never holds its GIL."""
    import sys

    characters = sys.stdin.buffer.read().decode("utf-8")
    sys.stdout.buffer.write(subset_woff(Path(sys.argv[1]), [characters]))


if __name__ == "__main__":
    main()
