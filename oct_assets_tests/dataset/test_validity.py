"""One rule for what a scan is: each bad-pixel case refused by name, by the check's header
test and the sample's decode test alike, and a listing that continues past each one."""

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oct_assets.dataset.scan import scan_tree
from oct_assets.dataset.validity import decode_problem, header_problem


def _jpeg(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG")
    return out.getvalue()


def _scan_like(h: int = 256, w: int = 256) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((h, w)) * 200 + 20).astype(np.uint8)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims `width`x`height` 8-bit gray pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def _cases(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, words its reason must contain)."""
    out = {}

    def put(name: str, data: bytes, reason: str) -> None:
        path = tmp / f"CNV-{len(out)}-1.jpeg"
        path.write_bytes(data)
        out[name] = (path, reason)

    b = io.BytesIO()
    Image.fromarray(_scan_like().astype(np.uint16) * 256).save(b, "PNG")
    put("16-bit PNG named .jpeg", b.getvalue(), "mode I")
    b = io.BytesIO()
    Image.fromarray(_scan_like().astype(np.float32) / 255).save(b, "TIFF")
    put("float TIFF", b.getvalue(), "format TIFF")
    tall = bytearray(_jpeg(_scan_like()))
    sof = tall.find(b"\xff\xc0")
    tall[sof + 5 : sof + 7] = (2048).to_bytes(2, "big")  # claims 2048 rows, holds 256
    put("header claims more pixels than it holds", bytes(tall), "pixel data ends before")
    put("decompression bomb", _png_header_only(30000, 30000), "decompression bomb")
    put("trailing bytes", _jpeg(_scan_like()) + b"\0" * 4096, "end-of-image marker")
    put("tiny", _jpeg(_scan_like(16, 16)), "size 16x16")
    return out


def test_each_bad_scan_is_refused_by_name_at_both_depths(tmp_path: Path) -> None:
    cases = _cases(tmp_path)
    for name, (path, reason) in cases.items():
        assert reason in (decode_problem(path) or ""), (name, decode_problem(path))
        if "pixel data ends" not in reason:  # the one part only a decode can see
            assert header_problem(path) == decode_problem(path), name
    good = tmp_path / "CNV-99-1.jpeg"
    good.write_bytes(_jpeg(_scan_like()))
    assert header_problem(good) is None and decode_problem(good) is None


def test_a_symlink_loop_in_a_class_folder_is_a_named_ignored_entry(tiny_tree: Path) -> None:
    loop = tiny_tree / "train" / "CNV" / "CNV-123-1.jpeg"
    os.symlink(loop.name, loop)
    scan = scan_tree(tiny_tree)
    assert ("train/CNV/CNV-123-1.jpeg", "cannot stat (Too many levels of symbolic links)") in (
        scan.ignored
    )


@pytest.mark.parametrize("workers", [1, 8])
def test_check_and_sample_list_every_bad_file(tmp_path: Path, workers: int) -> None:
    from oct_assets.contracts.errors import SampleError
    from oct_assets.dataset.sampling import check_images
    from oct_assets.dataset.scan import ImageRecord

    cases = _cases(tmp_path)
    records = [ImageRecord(p.name, 1, 1, "train", "CNV", "1") for p, _ in cases.values()]
    with pytest.raises(SampleError) as err:
        check_images(tmp_path, records, workers=workers)
    for path, reason in cases.values():
        assert f"{path}: " in str(err.value) and reason in str(err.value)
