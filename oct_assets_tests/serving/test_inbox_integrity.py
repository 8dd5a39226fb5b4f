"""`inbox_predictions` never attaches one file's diagnosis to another's bytes (issue 20, 2)."""

import hashlib
import io
import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from dagster import DagsterInstance
from PIL import Image

from oct_assets.assets.champion import champion_model
from oct_assets.assets.inbox import inbox_predictions
from oct_assets.dataset import inbox as inbox_lib
from oct_assets.serving.score import score_files
from oct_assets_tests.serving.test_inbox import rows, run, scans


def model_dir(champion: dict) -> Path:
    chosen = json.loads((Path(champion["path"]) / "champion.json").read_text())["model"]
    return Path(os.environ["OCT_DATA_DIR"]) / chosen["model_dir"]


def png_bytes(src: Path, size: tuple[int, int] = (96, 80)) -> bytes:
    """A scan as an uncompressed PNG: every scan of one size has the same byte count."""
    buf = io.BytesIO()
    Image.open(src).convert("L").resize(size).save(buf, format="PNG", compress_level=0)
    return buf.getvalue()


def verdict_of(model: Path, data: bytes, where: Path) -> list[str]:
    """The champion's probabilities for `data`, scored on its own (as the CLI does)."""
    where.write_bytes(data)
    [s] = score_files(model, [where], cams=False)
    return [f"{p:.6f}" for p in s.probabilities]


def probabilities(row: dict[str, str]) -> list[str]:
    return [row[c] for c in ("CNV", "DME", "DRUSEN", "NORMAL")]


@pytest.fixture
def two_scans(trained: Path) -> tuple[bytes, bytes]:
    a, b = (png_bytes(p) for p in scans(trained.parent / "images")[:2])
    assert len(a) == len(b) and a != b
    return a, b


def test_two_inboxes_same_name_size_and_mtime(
    trained: Path, tmp_path: Path, two_scans: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = DagsterInstance.ephemeral()
    champion = run(instance, champion_model, accuracy_floor=0.0)
    results = {}
    for name, data in zip(("inboxX", "inboxY"), two_scans, strict=True):
        scan = tmp_path / name / "scan.png"
        scan.parent.mkdir()
        scan.write_bytes(data)
        os.utime(scan, ns=(1_700_000_000_000_000_000,) * 2)
        monkeypatch.setenv("OCT_INBOX_DIR", str(scan.parent))
        results[name] = rows(run(instance, inbox_predictions))["scan.png"]
    for name, data in zip(("inboxX", "inboxY"), two_scans, strict=True):
        row = results[name]
        assert row["sha256"] == hashlib.sha256(data).hexdigest(), name
        assert probabilities(row) == verdict_of(model_dir(champion), data, tmp_path / "alone.png")


def test_replaced_while_scored_keeps_hash_and_verdict_together(
    trained: Path, tmp_path: Path, two_scans: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mv B A` lands after the file was opened, before it is decoded: the row names A's
    bytes and A's verdict (the bytes decoded); the next run scores B."""
    instance = DagsterInstance.ephemeral()
    champion = run(instance, champion_model, accuracy_floor=0.0)
    a, b = two_scans
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "scan.png").write_bytes(a)
    (tmp_path / "b.png").write_bytes(b)
    monkeypatch.setenv("OCT_INBOX_DIR", str(inbox))
    real_open = Image.open
    armed = [True]

    def open_and_replace(*args, **kwargs):
        if armed[0]:
            armed[0] = False
            os.replace(tmp_path / "b.png", inbox / "scan.png")
        return real_open(*args, **kwargs)

    monkeypatch.setattr(Image, "open", open_and_replace)
    first = rows(run(instance, inbox_predictions))["scan.png"]
    monkeypatch.setattr(Image, "open", real_open)
    assert not armed[0], "the replacement never happened"
    model = model_dir(champion)
    assert first["sha256"] == hashlib.sha256(a).hexdigest()
    assert probabilities(first) == verdict_of(model, a, tmp_path / "alone.png")
    second = rows(run(instance, inbox_predictions))["scan.png"]
    assert second["sha256"] == hashlib.sha256(b).hexdigest()
    assert probabilities(second) == verdict_of(model, b, tmp_path / "alone.png")


def test_replaced_in_a_loop_never_mixes(
    trained: Path, tmp_path: Path, two_scans: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread swaps A and B under 20 names with atomic renames while the inbox is scored:
    every row's verdict is the verdict of the bytes its sha256 names."""
    instance = DagsterInstance.ephemeral()
    champion = run(instance, champion_model, accuracy_floor=0.0)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    names = [f"scan{i:02d}.png" for i in range(20)]
    for n in names:
        (inbox / n).write_bytes(two_scans[0])
    monkeypatch.setenv("OCT_INBOX_DIR", str(inbox))
    stop = threading.Event()

    def swap() -> None:
        k = 0
        while not stop.is_set():
            k += 1
            tmp = tmp_path / f"next{k}.png"
            tmp.write_bytes(two_scans[k % 2])
            os.replace(tmp, inbox / names[k % len(names)])

    swapper = threading.Thread(target=swap)
    swapper.start()
    try:
        table = rows(run(instance, inbox_predictions))
    finally:
        stop.set()
        swapper.join()
    model = model_dir(champion)
    expected = {
        hashlib.sha256(d).hexdigest(): verdict_of(model, d, tmp_path / "alone.png")
        for d in two_scans
    }
    for n in names:
        row = table[n]
        if row["sha256"]:
            assert probabilities(row) == expected[row["sha256"]], n
        else:
            assert row["reason"].startswith("changed while being read"), row


def test_a_file_changing_while_read_is_read_again_or_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scan = tmp_path / "scan.png"
    scan.write_bytes(b"old bytes")
    real = inbox_lib._read_fd
    appends = [1]

    def read_while_appending(fd: int, limit: int) -> bytes:
        data = real(fd, limit)
        if appends[0]:
            appends[0] -= 1
            with open(scan, "ab") as f:
                f.write(b" and more")
        return data

    monkeypatch.setattr(inbox_lib, "_read_fd", read_while_appending)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        again = inbox_lib.read_scan(fd, str(tmp_path), "scan.png", 0)
        assert again.data == b"old bytes and more"
        assert again.sha256 == hashlib.sha256(again.data).hexdigest()
        appends[0] = 10
        reported = inbox_lib.read_scan(fd, str(tmp_path), "scan.png", 0)
        assert reported.data is None and reported.reason.startswith("changed while being read")
    finally:
        os.close(fd)


def test_a_damaged_old_output_does_not_stop_later_runs(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = DagsterInstance.ephemeral()
    run(instance, champion_model, accuracy_floor=0.0)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    good = scans(trained.parent / "images")
    shutil.copyfile(good[0], inbox / "a.jpeg")
    monkeypatch.setenv("OCT_INBOX_DIR", str(inbox))
    first = run(instance, inbox_predictions)
    damaged = Path(first["path"]).parent / "0123456789abcdef"
    damaged.mkdir()
    (damaged / "manifest.json").write_text("{not json")
    (damaged / "predictions.csv").write_text("sha256\n\0\n")
    shutil.copyfile(good[1], inbox / "b.jpeg")
    second = run(instance, inbox_predictions)
    assert second["scored_now"] == 1 and second["reused"] == 1 and second["hashed"] == 1
    # A damaged pointer to the previous output: a warning, and every file is read again.
    [pointer] = (Path(first["path"]).parent / ".latest").iterdir()
    pointer.write_text("[")
    shutil.copyfile(good[2], inbox / "c.jpeg")
    third = run(instance, inbox_predictions)
    assert third["hashed"] == 3 and third["scored_now"] == 1 and third["reused"] == 2
    assert set(rows(third)) == {"a.jpeg", "b.jpeg", "c.jpeg"}


def test_two_runs_at_once(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two `inbox_predictions` at once on one inbox: both succeed with the same, complete
    folder, and every row names the bytes of its file."""
    run(DagsterInstance.ephemeral(), champion_model, accuracy_floor=0.0)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    good = scans(trained.parent / "images")
    for i in range(40):
        shutil.copyfile(good[i % len(good)], inbox / f"scan-{i:02d}.jpeg")
    monkeypatch.setenv("OCT_INBOX_DIR", str(inbox))
    results: list[dict] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            with DagsterInstance.ephemeral() as instance:  # disposed in the thread using it
                results.append(run(instance, inbox_predictions))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and len(results) == 2, errors
    assert results[0]["path"] == results[1]["path"]
    table = rows(results[0])
    assert len(table) == 40
    for name, row in table.items():
        assert row["sha256"] == hashlib.sha256((inbox / name).read_bytes()).hexdigest()
        assert row["predicted_class"] and (Path(results[0]["path"]) / row["cam"]).is_file()
