"""Is this file a usable scan? Two depths of the same question, with one vocabulary of reasons.

`header_problem` reads the header and the last KiB: cheap enough for all ~84k images of the
release (the `images_readable` check). `decode_problem` decodes at 1/8 scale: it reads the
whole stream, for the few thousand images a sample actually trains on. Both return None for
a good file, else a short reason to show after the file's path. PIL loads on first use, so
loading the Dagster definitions stays light.
"""

from collections.abc import Callable
from pathlib import Path

JPEG_END = b"\xff\xd9"
JPEG_TAIL_BYTES = 1024  # the end-of-image marker must lie within the file's last KiB


def header_problem(path: Path) -> str | None:
    """Why `path` lacks a readable image header (or, for JPEG, an end marker), else None."""

    def check() -> str | None:
        from PIL import Image

        size = path.stat().st_size
        if size == 0:
            return "empty file (0 bytes)"
        with open(path, "rb") as f:
            with Image.open(f) as img:
                img_format = img.format
            if img_format == "JPEG":
                f.seek(max(0, size - JPEG_TAIL_BYTES))
                if JPEG_END not in f.read():
                    return "truncated: no JPEG end-of-image marker"
        return None

    return _reason(check, "unreadable header")


def decode_problem(path: Path) -> str | None:
    """Why `path` does not decode as an image (JPEG draft mode, 1/8 scale), else None."""

    def check() -> str | None:
        from PIL import Image

        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        with Image.open(path) as img:
            img.draft("L", (img.width // 8, img.height // 8))
            img.load()
        return None

    return _reason(check, "cannot decode")


def _reason(check: Callable[[], str | None], failure: str) -> str | None:
    """Run `check`, turning the ways a file can fail to open into the shared reasons."""
    from PIL import UnidentifiedImageError

    try:
        return check()
    except FileNotFoundError:
        return "missing (deleted since the scan)"
    except UnidentifiedImageError:
        return "not an image"
    except (OSError, SyntaxError, ValueError) as exc:
        return f"{failure} ({exc})"
