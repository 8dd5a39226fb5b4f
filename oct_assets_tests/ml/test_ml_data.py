"""Sample reading, patient split and the decode cache."""

import json
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oct_assets.contracts.errors import ImageDecodeError, SampleError
from oct_assets.ml import cache
from oct_assets.ml.cache import cache_key, decoded_images
from oct_assets.ml.data import patient_split, read_sample, require_all_classes
from oct_assets.ml.decode import BAND_RPE_AT, decode_gray


def test_read_sample_keeps_csv_order(tiny_sample):
    sample = read_sample(tiny_sample)
    assert sample.salt == "tiny"
    assert sample.classes == ("CNV", "DME", "DRUSEN", "NORMAL")
    assert len(sample) == 4 * (8 + 3)
    assert sample.files[0].startswith("train/CNV/")
    assert len(sample.indices("train")) == 32


def test_label_outside_manifest_is_named(make_sample):
    root = make_sample()
    text = (root / "images.csv").read_text().replace(",CNV,", ",XYZ,", 1)
    (root / "images.csv").write_text(text)
    with pytest.raises(SampleError, match=r"images.csv:2: label 'XYZ'"):
        read_sample(root)


def test_empty_train_class_is_named(make_sample):
    sample = read_sample(make_sample(empty_train_class="DRUSEN"))
    with pytest.raises(SampleError, match="class 'DRUSEN' has no images in the train split"):
        require_all_classes(sample, "train")


def test_patient_split_keeps_patients_whole(tiny_sample):
    sample = read_sample(tiny_sample)
    fit, val = patient_split(sample, sample.indices("train"), 0.25, seed=0)
    assert len(fit) + len(val) == 32 and len(val) > 0
    assert not set(sample.patients[fit]) & set(sample.patients[val])
    assert set(sample.labels[val]) == {0, 1, 2, 3}  # every class validated
    again = patient_split(sample, sample.indices("train"), 0.25, seed=0)
    assert np.array_equal(again[1], val)


def test_decode_crop_and_resize(tmp_path):
    wide = np.zeros((50, 150), dtype=np.uint8)
    wide[:, 50:100] = 255  # only the central square is bright
    Image.fromarray(wide).save(tmp_path / "wide.jpeg", quality=95)
    crop = decode_gray(tmp_path / "wide.jpeg", 20, "crop")
    squeeze = decode_gray(tmp_path / "wide.jpeg", 20, "resize")
    assert crop.shape == squeeze.shape == (20, 20) and crop.dtype == np.uint8
    assert crop.mean() > 200 and 60 < squeeze.mean() < 120


@pytest.mark.parametrize("content", [b"", b"not an image at all", "truncated"])
def test_bad_image_is_named(make_sample, content):
    root = make_sample()
    victim = root / "train" / "DME" / sorted(p.name for p in (root / "train/DME").iterdir())[0]
    data = (
        victim.read_bytes()[: len(victim.read_bytes()) // 2] if content == "truncated" else content
    )
    victim.write_bytes(data)
    with pytest.raises(ImageDecodeError, match=victim.name):
        decoded_images(read_sample(root), 32, "resize", root.parent / "cache", workers=1)


def test_cache_is_filled_once_and_read_without_decoding(tiny_sample, tmp_path, monkeypatch):
    sample = read_sample(tiny_sample)
    cold = decoded_images(sample, 24, "resize", tmp_path, workers=1)
    stem = cache_key("tiny", 24, "resize")
    index = json.loads((tmp_path / f"{stem}.json").read_text())
    assert index["n"] == len(sample) and (tmp_path / f"{stem}.u8").stat().st_size == 44 * 576

    def no_decode(*args, **kwargs):
        raise AssertionError("warm cache decoded a JPEG")

    monkeypatch.setattr(cache, "decode_gray", no_decode)
    monkeypatch.setattr(Image, "open", no_decode)
    warm = decoded_images(sample, 24, "resize", tmp_path)
    rows = np.array([0, 5, 43])
    assert np.array_equal(warm.read(rows), cold.read(rows))


def test_parallel_fill_matches_serial(tiny_sample, tmp_path, monkeypatch):
    sample = read_sample(tiny_sample)
    monkeypatch.setattr(cache, "CHUNK", 8)  # several chunks so the pool is really used
    serial = decoded_images(sample, 16, "crop", tmp_path / "a", workers=1)
    parallel = decoded_images(sample, 16, "crop", tmp_path / "b", workers=2)
    rows = np.arange(len(sample))
    assert np.array_equal(serial.read(rows), parallel.read(rows))
    assert not list(Path(tmp_path / "b").glob(".*.tmp"))


def test_stale_cache_is_rebuilt(tiny_sample, tmp_path):
    sample = read_sample(tiny_sample)
    decoded_images(sample, 16, "resize", tmp_path, workers=1)
    index_path = tmp_path / f"{cache_key('tiny', 16, 'resize')}.json"
    index = json.loads(index_path.read_text())
    index["fingerprint"] = "other"
    index_path.write_text(json.dumps(index))
    decoded_images(sample, 16, "resize", tmp_path, workers=1)
    assert json.loads(index_path.read_text())["fingerprint"] == sample.fingerprint()


def test_band_fit_centres_the_retina(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.normal(30, 8, size=(200, 300))
    img[140:150, :] = 230  # the RPE: the brightest band, low in the scan
    img[:20, :40] = 255  # a saturated registration wedge must not win
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(tmp_path / "scan.jpeg")
    out = decode_gray(tmp_path / "scan.jpeg", 64, "band").astype(float)
    bright_row = out.mean(axis=1).argmax() / 64
    assert abs(bright_row - BAND_RPE_AT) < 0.08


def test_fill_survives_workers_that_cannot_start(tiny_sample, tmp_path, monkeypatch):
    class DeadPool:  # what a spawn pool does when the caller's __main__ cannot be re-imported
        def __init__(self, *args, **kwargs):
            pass

        def submit(self, *args, **kwargs):
            future = Future()
            future.set_running_or_notify_cancel()
            future.set_exception(BrokenProcessPool("worker died at start-up"))
            return future

        def shutdown(self, **kwargs):
            pass

    sample = read_sample(tiny_sample)
    monkeypatch.setattr(cache, "CHUNK", 8)
    monkeypatch.setattr(cache, "ProcessPoolExecutor", DeadPool)
    rescued = decoded_images(sample, 16, "crop", tmp_path / "a", workers=2)
    serial = decoded_images(sample, 16, "crop", tmp_path / "b", workers=1)
    rows = np.arange(len(sample))
    assert np.array_equal(rescued.read(rows), serial.read(rows))
