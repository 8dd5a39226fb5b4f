"""Decoding one scan: JPEG draft-mode grayscale at the training size, fitted to the square."""

from __future__ import annotations

import math
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from oct_assets.contracts.errors import ImageDecodeError

DECODE_VERSION = 2  # part of the decode cache's key: bump when a decoded image changes
BAND_HEIGHT = 0.65  # share of the scan's rows kept by fit="band"
BAND_RPE_AT = 0.62  # where the brightest (RPE) rows land inside the band, from the top


def decode_gray(path: Path | BinaryIO, size: int, fit: str) -> np.ndarray:
    """Decode one scan (a path, or bytes already read as `io.BytesIO`: the same pixels) to a
    `size` x `size` uint8 grayscale array.

    JPEG draft mode lets libjpeg decode straight to grayscale at a reduced DCT scale (still
    at least the rows and columns the fit needs), which is most of the speed-up over a
    full-resolution RGB decode. See `fit_box` for the fits.
    """
    try:
        with Image.open(path) as im:
            # band keeps BAND_HEIGHT of the rows: ask for enough rows that it is not upscaled
            rows = math.ceil(size / BAND_HEIGHT) if fit == "band" else size
            im.draft("L", (size, rows))
            im = im.convert("L")  # forces the load: truncated files raise here
            im = im.resize((size, size), Image.Resampling.BILINEAR, box=fit_box(im, fit))
            return np.asarray(im, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"cannot decode image {path}: {exc}") from exc


def fit_box(im: Image.Image, fit: str) -> tuple[int, int, int, int]:
    """The region of a decoded scan that becomes the square network input.

    "resize": the whole scan, squeezed. "band": the whole width, but only the horizontal
    band of rows holding the retina, so the same input size sees the layers at ~1.5x the
    vertical resolution. Neither depends on the scan's width: a scan resampled to twice its
    width gives the same input. "crop": the central square, which does (a 1024-px-wide scan
    resampled from 512 shows half the retina, stretched); kept for square synthetic data.
    """
    w, h = im.size
    if fit == "resize":
        return (0, 0, w, h)
    if fit == "crop":
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        return (left, top, left + side, top + side)
    band = round(BAND_HEIGHT * h)
    rpe = retina_row(im)
    band_top = min(max(0, round(rpe - BAND_RPE_AT * band)), h - band)
    return (0, band_top, w, band_top + band)


def retina_row(im: Image.Image, work: int = 64) -> float:
    """Row of the brightest horizontal band (the RPE / choroid complex), in `im` pixels.

    Works on a `work`-pixel thumbnail. Registration wedges (flat saturated white corners)
    are masked first; the row profile is smoothed over 1/8 of the height, so single bright
    specks cannot win.
    """
    small = np.asarray(im.resize((work, work), Image.Resampling.BOX), dtype=np.float32)
    bright = small > 235
    wedge = bright.copy()  # 3x3 erosion: saturated areas, not thin bright lines
    wedge[1:] &= bright[:-1]
    wedge[:-1] &= bright[1:]
    wedge[:, 1:] &= bright[:, :-1]
    wedge[:, :-1] &= bright[:, 1:]
    profile = np.where(wedge, 0.0, small).mean(axis=1)
    k = work // 8
    smooth = np.convolve(profile, np.ones(k) / k, mode="same")
    return (float(smooth.argmax()) + 0.5) * im.height / work
