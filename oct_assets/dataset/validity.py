"""What a scan is: one rule, at two depths, with one vocabulary of reasons.

A scan is a JPEG or PNG file, 8-bit grayscale (`L`) or RGB, 64 to 4096 pixels a side, whose
JPEG stream ends with its end-of-image marker in its last KiB (so a truncated file and one with
trailing data after the image are both refused, by the check and the sample alike), and whose
pixel data fills the size its header claims.

`header_problem` reads the header and the last KiB: cheap enough for all ~84k images of the
release (the `images_readable` check). `decode_problem` applies the same header rule, then
decodes at 1/8 scale (JPEG draft mode): it reads the whole stream, for the images a sample
actually trains on. Both return None for a good file, else a short reason to show after the
file's path; no file's problem is raised. PIL loads on first use, so loading the Dagster
definitions stays light.
"""

import io
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

FORMATS = ("JPEG", "PNG")
MODES = ("L", "RGB")  # 8 bits per channel; 16-bit ("I;16", "I") and float ("F") are refused
MIN_SIDE, MAX_SIDE = 64, 4096
JPEG_END = b"\xff\xd9"
JPEG_TAIL_BYTES = 1024  # the end-of-image marker must lie within the file's last KiB
MISSING_DATA_GRAY = 128  # what libjpeg fills rows with when the data ends before the header's size


def header_problem(path: Path) -> str | None:
    """Why `path` is not a scan by its header (format, mode, size, end marker), else None."""

    def check() -> str | None:
        size = path.stat().st_size
        if size == 0:
            return "empty file (0 bytes)"
        with open(path, "rb") as f:
            return _header_check(f, size)

    return _reason(check, "unreadable header")


def header_problem_bytes(data: bytes) -> str | None:
    """`header_problem` of a file already read into memory (the inbox hashes and decodes the
    very bytes it read once, so the file is never opened again)."""
    if not data:
        return "empty file (0 bytes)"
    return _reason(lambda: _header_check(io.BytesIO(data), len(data)), "unreadable header")


def _header_check(f: BinaryIO, size: int) -> str | None:
    from PIL import Image

    with Image.open(f) as img:
        why = _header_rule(img.format, img.mode, img.size)
        img_format = img.format
    if why is None and img_format == "JPEG":
        f.seek(max(0, size - JPEG_TAIL_BYTES))
        if JPEG_END not in f.read():
            why = (
                "no JPEG end-of-image marker in its last KiB "
                "(truncated, or trailing data after the image)"
            )
    return why


def decode_problem(path: Path) -> str | None:
    """Why `path` is not a scan: the header rule, then a decode at 1/8 scale; else None."""
    why = header_problem(path)
    if why is not None:
        return why

    def check() -> str | None:
        import numpy as np
        from PIL import Image

        with Image.open(path) as img:
            img.draft("L", (img.width // 8, img.height // 8))
            img.load()
            pixels = np.asarray(img.convert("L"))
        band = pixels[-max(2, pixels.shape[0] // 8) :]
        if (band == MISSING_DATA_GRAY).all():
            return (
                "pixel data ends before the size its header claims "
                f"({img.width}x{img.height}; the last rows decode as flat gray)"
            )
        return None

    return _reason(check, "cannot decode")


def _header_rule(img_format: str | None, mode: str, size: tuple[int, int]) -> str | None:
    if img_format not in FORMATS:
        return f"format {img_format}, expected {' or '.join(FORMATS)}"
    if mode not in MODES:
        return f"mode {mode}, expected 8-bit grayscale (L) or RGB"
    if not all(MIN_SIDE <= side <= MAX_SIDE for side in size):
        return f"size {size[0]}x{size[1]}, expected {MIN_SIDE} to {MAX_SIDE} pixels a side"
    return None


def _reason(check: Callable[[], str | None], failure: str) -> str | None:
    """Run `check`, turning the ways a file can fail to open into the shared reasons."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return check()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return f"decompression bomb ({exc})"
    except FileNotFoundError:
        return "missing (deleted since the scan)"
    except UnidentifiedImageError:
        return "not an image"
    except (OSError, SyntaxError, ValueError) as exc:
        return f"{failure} ({exc})"
