"""Whatever a folder can hold gives a row with a reason, never a hang (issue 20, 5)."""

import contextlib
import csv
import hashlib
import os
import shutil
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance

from oct_assets.assets.champion import champion_model
from oct_assets.assets.inbox import inbox_predictions
from oct_assets_tests.serving.test_inbox import rows, run, scans


class Hangs(Exception):
    """Not an OSError (as TimeoutError is), so no `except OSError` can swallow it."""


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail instead of hanging: SIGALRM interrupts a blocking open() or an endless read()."""

    def expire(signum, frame):
        signal.alarm(5)  # and again, should something catch it
        raise Hangs(f"still running after {seconds} s: the inbox run hangs")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def inbox(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "inbox"
    root.mkdir()
    monkeypatch.setenv("OCT_INBOX_DIR", str(root))
    return root


def scored(meta: dict) -> dict[str, dict[str, str]]:
    return {k: r for k, r in rows(meta).items() if r["predicted_class"]}


def test_fifo_socket_and_endless_device_give_rows(trained: Path, inbox: Path) -> None:
    instance = DagsterInstance.ephemeral()
    run(instance, champion_model, accuracy_floor=0.0)
    shutil.copyfile(scans(trained.parent / "images")[0], inbox / "good.jpeg")
    os.mkfifo(inbox / "pipe.jpeg")
    os.symlink("pipe.jpeg", inbox / "to-pipe.jpeg")
    os.symlink("/dev/zero", inbox / "zero.jpeg")
    os.symlink(inbox, inbox / "loop")  # a link to a folder (here: the inbox itself)
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(inbox / "sock.jpeg"))
        with deadline(120):
            meta = run(instance, inbox_predictions)
    finally:
        sock.close()
    table = rows(meta)
    assert table["pipe.jpeg"]["reason"] == "not a regular file (a FIFO)"
    assert table["to-pipe.jpeg"]["reason"] == "not a regular file (a FIFO)"
    assert table["sock.jpeg"]["reason"] == "not a regular file (a socket)"
    assert table["zero.jpeg"]["reason"] == "unreadable (a link out of the inbox)"
    assert table["loop"]["reason"] == "not a regular file (a folder)"
    assert set(scored(meta)) == {"good.jpeg"} and meta["n_files"] == 6


def test_links_out_of_the_inbox_are_not_read(trained: Path, inbox: Path, tmp_path: Path) -> None:
    instance = DagsterInstance.ephemeral()
    run(instance, champion_model, accuracy_floor=0.0)
    good = scans(trained.parent / "images")
    secret = tmp_path / "secret.jpeg"  # a scan outside, which the service could read
    shutil.copyfile(good[1], secret)
    (inbox / "sub").mkdir()
    shutil.copyfile(good[0], inbox / "sub" / "inside.jpeg")
    os.symlink(secret, inbox / "absolute.jpeg")
    os.symlink("../secret.jpeg", inbox / "relative.jpeg")
    os.symlink("../sub/../../secret.jpeg", inbox / "sub" / "dotdot.jpeg")
    os.symlink(tmp_path, inbox / "outdir")
    os.symlink("outdir/secret.jpeg", inbox / "through-outdir.jpeg")
    os.symlink("sub/inside.jpeg", inbox / "inside-link.jpeg")  # stays inside: followed
    os.symlink(inbox / "sub" / "inside.jpeg", inbox / "inside-absolute.jpeg")
    os.symlink("missing.jpeg", inbox / "dangling.jpeg")
    with deadline(120):
        meta = run(instance, inbox_predictions)
    table = rows(meta)
    outside = hashlib.sha256(secret.read_bytes()).hexdigest()
    assert outside not in Path(meta["predictions_csv"]).read_text()
    for rel in ("absolute.jpeg", "relative.jpeg", "sub/dotdot.jpeg", "through-outdir.jpeg"):
        assert table[rel]["reason"] == "unreadable (a link out of the inbox)", rel
    assert table["dangling.jpeg"]["reason"] == "unreadable (a dangling link)"
    inside = hashlib.sha256((inbox / "sub" / "inside.jpeg").read_bytes()).hexdigest()
    for rel in ("sub/inside.jpeg", "inside-link.jpeg", "inside-absolute.jpeg"):
        assert table[rel]["sha256"] == inside and table[rel]["predicted_class"], rel


ODD_NAMES = [
    "scan-\udcff\udcfe.jpeg",  # bytes that are not UTF-8 (kept exact, as surrogates)
    "line\nbreak.jpeg",
    "carriage\rreturn.jpeg",
    "x" * 251 + ".jpg",  # 255 bytes: the longest name a folder can hold
    '=HYPERLINK("example.com","x").jpeg',
    "+1-2.jpeg",
    "@SUM(A1).jpeg",
    '"quoted", with comma.jpeg',
    "tab\there.jpeg",
    "ünïcödé 診断.jpeg",
    "back\\slash.jpeg",
]


def test_any_file_name_gets_a_row(trained: Path, inbox: Path) -> None:
    instance = DagsterInstance.ephemeral()
    run(instance, champion_model, accuracy_floor=0.0)
    good = scans(trained.parent / "images")[0]
    (inbox / "deep").mkdir()
    for name in ODD_NAMES:
        shutil.copyfile(good, os.fsencode(inbox / "deep") + b"/" + os.fsencode(name))
    with deadline(120):
        first = run(instance, inbox_predictions)
    text = Path(first["predictions_csv"]).read_bytes().decode("utf-8")  # valid UTF-8
    with open(first["predictions_csv"], newline="", encoding="utf-8") as f:
        table = {r["file"]: r for r in csv.DictReader(f)}
    shown = {
        f"deep/{n}".encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        for n in ODD_NAMES
    }
    assert set(table) == shown and "deep/scan-\\xff\\xfe.jpeg" in table, text[:500]
    assert all(r["predicted_class"] and not r["reason"] for r in table.values())
    # Valid names round-trip exactly; the next run reuses every row without reading a file.
    for name in ODD_NAMES[1:]:
        assert f"deep/{name}" in table
    shutil.copyfile(good, inbox / "new.jpeg")
    second = run(instance, inbox_predictions)
    assert second["hashed"] == 1 and second["reused"] == len(ODD_NAMES) + 1
