"""`inbox_predictions` and `inbox_sensor`: incremental scoring of an inbox with bad files in it."""

import csv
import io
import os
import random
from pathlib import Path

import pytest
from dagster import DagsterInstance, build_sensor_context, materialize
from PIL import Image

from oct_assets.assets.champion import champion_model
from oct_assets.assets.graph import LOCAL_GRAPH
from oct_assets.assets.inbox import inbox_predictions
from oct_assets.definitions import defs
from oct_assets.sensors.inbox import inbox_sensor
from oct_assets_tests.serving.conftest import RESOURCES

BAD = {  # the reasons of the one scan rule (dataset/validity.py), but for the link
    "bad/corrupt.jpeg": "unreadable header",
    "bad/truncated.jpeg": "no JPEG end-of-image marker",
    "bad/notes.txt": "not an image",
    "bad/empty.jpeg": "empty file",
    "bad/dangling.jpeg": "unreadable",  # refused by the inbox before hashing
    "bad/huge.png": "size 8000x6000, expected 64 to 4096",
    "bad/huge.jpeg": "not an image",
}


def run(instance: DagsterInstance, asset, **config) -> dict:
    result = materialize(
        [*LOCAL_GRAPH, champion_model, inbox_predictions],
        selection=[asset],
        instance=instance,
        resources=RESOURCES,
        run_config={"ops": {asset.key.path[-1]: {"config": config}}} if config else None,
    )
    [event] = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def rows(meta: dict) -> dict[str, dict[str, str]]:
    with open(meta["predictions_csv"], newline="") as f:
        return {r["file"]: r for r in csv.DictReader(f)}


def scans(images: Path) -> list[Path]:
    return sorted((images / "test").rglob("*.jpeg"))


@pytest.fixture
def inbox(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An inbox with three good scans under any names and one file of each bad kind."""
    root = tmp_path / "inbox"
    good = scans(trained.parent / "images")
    for rel, src in zip(("a.jpeg", "clinic 1/scan-x.jpg", "clinic 1/deep/003"), good, strict=False):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(src.read_bytes())
    (root / "bad").mkdir()
    # Seeded noise: random bytes after a JPEG header could, by chance, parse as a huge frame.
    (root / "bad/corrupt.jpeg").write_bytes(b"\xff\xd8\xff\xe0" + random.Random(0).randbytes(3000))
    (root / "bad/truncated.jpeg").write_bytes(good[3].read_bytes()[:600])
    (root / "bad/notes.txt").write_text("not a scan")
    (root / "bad/empty.jpeg").write_bytes(b"")
    os.symlink(root / "missing.jpeg", root / "bad/dangling.jpeg")
    Image.new("L", (8000, 6000)).save(root / "bad/huge.png")
    with open(root / "bad/huge.jpeg", "wb") as f:  # sparse: 65 MiB on paper only
        f.truncate(65 << 20)
    (root / ".partial.jpeg").write_bytes(b"uploading")
    monkeypatch.setenv("OCT_INBOX_DIR", str(root))
    return root


def test_incremental_scoring_and_bad_input(trained: Path, inbox: Path) -> None:
    instance = DagsterInstance.ephemeral()
    champion = run(instance, champion_model, accuracy_floor=0.0)

    first = run(instance, inbox_predictions)
    table = rows(first)
    assert first["scored_now"] == 3 and first["reused"] == 0 and first["n_files"] == 10
    assert first["hashed"] == 9  # all but the dangling link
    assert first["n_hidden_left_out"] == 1 and ".partial.jpeg" in first["hidden_left_out"]
    for rel in ("a.jpeg", "clinic 1/scan-x.jpg", "clinic 1/deep/003"):
        row = table[rel]
        probs = [float(row[c]) for c in ("CNV", "DME", "DRUSEN", "NORMAL")]
        assert abs(sum(probs) - 1) < 1e-4 and row["reason"] == ""
        assert row["predicted_class"] == ("CNV", "DME", "DRUSEN", "NORMAL")[probs.index(max(probs))]
        assert row["model_salt"] == champion["model_salt"] and len(row["sha256"]) == 64
        assert (Path(first["path"]) / row["cam"]).is_file()
    for rel, reason in BAD.items():
        assert table[rel]["reason"].startswith(reason), (rel, table[rel]["reason"])
        assert table[rel]["predicted_class"] == ""
    assert first["n_bad"] == len(BAD) and "contact_sheet" in first

    # One new scan: one inference, the rest reused.
    new = scans(trained.parent / "images")[4]
    (inbox / "new.jpeg").write_bytes(new.read_bytes())
    second = run(instance, inbox_predictions)
    assert second["scored_now"] == 1 and second["reused"] == 3
    assert second["hashed"] == 1  # the others' stat is unchanged: not even read
    assert rows(second)["a.jpeg"] == {**table["a.jpeg"]}

    # Changed bytes under the same name are scored again.
    buf = io.BytesIO()
    Image.open(inbox / "a.jpeg").save(buf, format="JPEG", quality=50)
    (inbox / "a.jpeg").write_bytes(buf.getvalue())
    third = run(instance, inbox_predictions)
    assert (
        third["scored_now"] == 1
        and third["hashed"] == 1
        and rows(third)["a.jpeg"]["sha256"] != table["a.jpeg"]["sha256"]
    )

    # A removed scan's row is dropped.
    (inbox / "new.jpeg").unlink()
    fourth = run(instance, inbox_predictions)
    assert "new.jpeg" not in rows(fourth) and fourth["scored_now"] == 0

    # Unchanged inbox and champion: the same salt, a cache hit.
    assert run(instance, inbox_predictions)["cache_hit"] is True

    # A new champion (here: another rule) rescores everything.
    run(instance, champion_model, accuracy_floor=0.01)
    fifth = run(instance, inbox_predictions)
    assert fifth["scored_now"] == 3 and fifth["reused"] == 0


def test_sensor_ticks(trained: Path, inbox: Path) -> None:
    instance = DagsterInstance.ephemeral()

    def tick(cursor):
        context = build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
        return inbox_sensor.evaluate_tick(context)

    no_champion = tick(None)
    assert not no_champion.run_requests and "no champion" in no_champion.skip_message
    run(instance, champion_model, accuracy_floor=0.0)
    first = tick(None)
    [request] = first.run_requests
    assert list(request.asset_selection) == [inbox_predictions.key]
    assert request.tags["oct/reason"] == "first tick"
    same = tick(first.cursor)
    assert not same.run_requests and "no scan added" in same.skip_message
    os.utime(inbox / "a.jpeg", ns=(1, 1))
    touched = tick(first.cursor)
    assert touched.run_requests[0].tags["oct/reason"] == "inbox changed"
    run(instance, champion_model, accuracy_floor=0.01)
    assert tick(touched.cursor).run_requests[0].tags["oct/reason"] == "new champion"
