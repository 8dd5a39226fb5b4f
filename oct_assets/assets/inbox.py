"""`inbox_predictions`: a diagnosis for every scan in the inbox, by the champion, incrementally."""

import csv
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, AssetIn, MetadataValue, Output, asset

from oct_assets.assets.champion import CHAMPION, SERVING_GROUP, champion_model
from oct_assets.assets.metadata import listing, png_markdown
from oct_assets.assets.salted import salted_output
from oct_assets.dataset.inbox import InboxEntry, inbox_fingerprint, scan_inbox, sha256_file
from oct_assets.ml.champion import CHAMPION_JSON
from oct_assets.ml.formats import MANIFEST_JSON, MODEL_JSON, PREDICTIONS_CSV
from oct_assets.paths import data_dir, inbox_dir
from oct_assets.store.artifact import Artifact
from oct_assets.store.salt import is_complete, read_manifest

INBOX_PREDICTIONS = "inbox_predictions"
CAMS_DIR = "cams"  # cams/<relative path of the scan>.png
CONTACT_SHEET_PNG = "contact_sheet.png"
SHEET_TILES = 24
# {relative path: [size, mtime_ns, sha256]}: an unchanged file (same stat) is not read again.
INDEX_JSON = "inbox_index.json"


def inbox_columns(classes: list[str]) -> list[str]:
    """The columns of an inbox `predictions.csv` (one probability column per class)."""
    return ["file", "sha256", "predicted_class", *classes, "model_salt", "cam", "reason"]


def previous_rows(champion_salt: str) -> tuple[Path | None, dict[str, dict[str, str]]]:
    """Rows of the newest earlier inbox output of the same champion, by sha256.

    Published folders never change, so reading a sibling is safe; another champion's rows are
    never reused (a new champion rescores everything).
    """
    root = data_dir() / INBOX_PREDICTIONS
    best: tuple[int, Path] | None = None
    if root.is_dir():
        for folder in root.iterdir():
            if not is_complete(folder):
                continue
            manifest = read_manifest(folder)
            if manifest["upstream"].get(CHAMPION) != champion_salt:
                continue
            stamp = (folder / MANIFEST_JSON).stat().st_mtime_ns
            if best is None or stamp > best[0]:
                best = (stamp, folder)
    if best is None:
        return None, {}
    with open(best[1] / PREDICTIONS_CSV, newline="") as f:
        rows = {r["sha256"]: r for r in csv.DictReader(f) if r["sha256"]}
    return best[1], rows


def _place(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


@asset(
    name=INBOX_PREDICTIONS,
    group_name=SERVING_GROUP,
    code_version="1",
    ins={"champion_model": AssetIn(champion_model.key)},
    description="A class, probabilities and a CAM overlay for every scan in `$OCT_INBOX_DIR` "
    "(default `$OCT_DATA_DIR/inbox`), by the champion. Scans the same champion already scored "
    "(same sha256) are not scored again; unusable files get a row with the reason.",
)
def inbox_predictions(context: AssetExecutionContext, champion_model: Artifact) -> Output[Artifact]:
    root = inbox_dir()
    if root.is_dir():
        entries, hidden = scan_inbox(root)
    else:
        context.log.warning(f"inbox {root} does not exist (set OCT_INBOX_DIR): nothing to score")
        entries, hidden = [], []
    chosen = json.loads((champion_model.path / CHAMPION_JSON).read_text())["model"]

    def build(tmp: Path) -> dict[str, Any]:
        return score_inbox(context, root, entries, hidden, champion_model.salt, chosen, tmp)

    return salted_output(
        context,
        config={"inbox": str(root)},
        upstream={CHAMPION: champion_model.salt, "inbox_fingerprint": inbox_fingerprint(entries)},
        build=build,
        describe=describe_inbox,
    )


def score_inbox(
    context: AssetExecutionContext,
    root: Path,
    entries: list[InboxEntry],
    hidden: list[str],
    champion_salt: str,
    chosen: dict[str, Any],
    tmp: Path,
) -> dict[str, Any]:
    from oct_assets.ml.plots import overlay_sheet_png
    from oct_assets.ml.score import overlay_png, score_files

    model_dir = data_dir() / chosen["model_dir"]
    classes = json.loads((model_dir / MODEL_JSON).read_text())["classes"]
    before, reusable = previous_rows(champion_salt)
    known = json.loads((before / INDEX_JSON).read_text()) if before else {}
    index: dict[str, list[Any]] = {}
    rows: dict[str, dict[str, str]] = {}
    to_score: list[tuple[str, str]] = []  # (rel, sha256)
    hashed = 0
    for e in entries:
        old_stat = known.get(e.rel)
        if old_stat and old_stat[:2] == [e.size, e.mtime_ns] and e.size >= 0:
            sha = old_stat[2]  # same path, size and mtime as last time: no need to read it
        else:
            try:
                sha = sha256_file(root / e.rel)
                hashed += 1
            except OSError as exc:
                reason = f"unreadable ({exc.strerror})"
                rows[e.rel] = {"file": e.rel, "sha256": "", "reason": reason}
                continue
        index[e.rel] = [e.size, e.mtime_ns, sha]
        old = reusable.get(sha)
        if old is not None:
            row = {**old, "file": e.rel, "cam": ""}
            if old["cam"]:
                row["cam"] = f"{CAMS_DIR}/{e.rel}.png"
                _place(before / old["cam"], tmp / row["cam"])
            rows[e.rel] = row
        else:
            to_score.append((e.rel, sha))
    context.log.info(
        f"{len(entries)} files in {root}: {len(to_score)} to score, "
        f"{sum(1 for r in rows.values() if r['sha256'])} reused from {before}"
    )
    scores = score_files(model_dir, [root / rel for rel, _ in to_score])
    for (rel, sha), s in zip(to_score, scores, strict=True):
        row = {"file": rel, "sha256": sha, "reason": s.reason or ""}
        if s.probabilities is not None:
            row["predicted_class"] = s.predicted
            row.update({c: f"{p:.6f}" for c, p in zip(classes, s.probabilities, strict=True)})
            row["model_salt"] = chosen["model_salt"]
            row["cam"] = f"{CAMS_DIR}/{rel}.png"
            (tmp / row["cam"]).parent.mkdir(parents=True, exist_ok=True)
            (tmp / row["cam"]).write_bytes(overlay_png(s))
        rows[rel] = row
    ordered = [rows[e.rel] for e in entries]
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=inbox_columns(classes), restval="")
    writer.writeheader()
    writer.writerows(ordered)
    (tmp / PREDICTIONS_CSV).write_text(buf.getvalue())
    (tmp / INDEX_JSON).write_text(json.dumps(index))
    scored = [r for r in ordered if r.get("predicted_class")]
    tiles = [
        (
            f"{Path(r['file']).name}: {r['predicted_class']} {float(r[r['predicted_class']]):.2f}",
            tmp / r["cam"],
        )
        for r in scored[:SHEET_TILES]
    ]
    if tiles:
        (tmp / CONTACT_SHEET_PNG).write_bytes(overlay_sheet_png(tiles))
    bad = [f"{r['file']}: {r['reason']}" for r in ordered if r["reason"]]
    for line in bad[:20]:
        context.log.warning(f"not scored: {line}")
    return {
        "inbox": str(root),
        "model_asset": chosen["model_asset"],
        "model_salt": chosen["model_salt"],
        "n_files": len(entries),
        "hashed": hashed,
        "n_scored": len(scored),
        "scored_now": sum(1 for s in scores if s.probabilities is not None),
        "reused": len(scored) - sum(1 for s in scores if s.probabilities is not None),
        "bad": bad,
        "hidden": hidden,
        "predicted": {c: sum(1 for r in scored if r["predicted_class"] == c) for c in classes},
    }


def describe_inbox(folder: Path, s: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "inbox": MetadataValue.path(s["inbox"]),
        "model": f"{s['model_asset']} {s['model_salt']}",
        "n_files": s["n_files"],
        "hashed": s["hashed"],
        "n_scored": s["n_scored"],
        "scored_now": s["scored_now"],
        "reused": s["reused"],
        "n_bad": len(s["bad"]),
        "n_hidden_left_out": len(s["hidden"]),
        "predicted": MetadataValue.json(s["predicted"]),
        "predictions_csv": MetadataValue.path(str(folder / PREDICTIONS_CSV)),
    }
    if s["bad"]:
        meta["bad_files"] = listing("Files with no diagnosis, and why:", s["bad"])
    if s["hidden"]:
        meta["hidden_left_out"] = listing("Hidden files and folders left out:", s["hidden"])
    if (folder / CONTACT_SHEET_PNG).is_file():
        meta["contact_sheet"] = png_markdown(folder / CONTACT_SHEET_PNG, "CAM overlays")
    return meta
