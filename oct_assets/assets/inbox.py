"""`inbox_predictions`: a diagnosis for every scan in the inbox, by the champion, incrementally.

Every row is the champion's verdict on the very bytes its sha256 names: a file is read once,
and those bytes are hashed and decoded. Two things make a run with one new scan among many
cheap, and neither trusts a name:

- The verdict store (`.scored/` beside the salted folders): per champion, the row and CAM
  overlay of each sha256 scored, written atomically and never changed. Any file with those
  bytes, in any inbox, reuses them; `cam` in `predictions.csv` points there.
- The previous output's `inbox_index.csv`, found through `.latest/` (one pointer per inbox and
  champion, written after the output is complete): a file of the same inbox with the same stat
  identity (device, inode, size, mtime, ctime) keeps its row without being opened. Listing and
  index are both in path-byte order, so reuse is a streaming merge.
"""

import csv
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from dagster import AssetExecutionContext, AssetIn, MetadataValue, Output, asset

from oct_assets.assets.champion import SERVING_GROUP, champion_model
from oct_assets.assets.metadata import listing, png_markdown
from oct_assets.assets.salted import code_version, salted_output
from oct_assets.contracts.assets import CHAMPION_MODEL, INBOX_PREDICTIONS
from oct_assets.contracts.errors import DamagedFileError
from oct_assets.contracts.files import read_json, write_bytes, write_json_atomic
from oct_assets.contracts.formats import PREDICTIONS_CSV
from oct_assets.contracts.manifest import pointer_salt
from oct_assets.contracts.model_info import ModelInfo
from oct_assets.dataset.inbox import (
    FILE,
    HIDDEN,
    OTHER,
    InboxEntry,
    Listing,
    ScanBytes,
    display_name,
    listed_inbox,
    name_key,
    read_scan,
)
from oct_assets.paths import data_dir, inbox_dir
from oct_assets.serving.champion import CHAMPION_JSON
from oct_assets.store.artifact import Artifact
from oct_assets.store.salt import compute_salt, read_manifest, salted_dir

CODE_VERSION = "2"  # 2: verdict store, stat-identity index, rows streamed; cams outside folders
CONTACT_SHEET_PNG = "contact_sheet.png"
SHEET_TILES = 24
# The exact name (bytes that are not UTF-8 as surrogates), the stat identity ("" = read it next
# time), then every column of predictions.csv but `file`; in listing order.
INDEX_CSV = "inbox_index.csv"
SCORED_DIR = ".scored"  # <asset dir>/.scored/<store key>/<sha[:2]>/<sha>.json and .png
LATEST_DIR = ".latest"  # <asset dir>/.latest/<inbox hash>-<champion salt>.json: {"salt": ...}
FLUSH_ROWS = 1024  # rows held at most before the pending scans are scored and all written
SHOWN = 100  # bad and hidden files named in the manifest (their counts are complete)
_SALT_RE = re.compile(r"[0-9a-f]{16}")


def inbox_columns(classes: list[str]) -> list[str]:
    """The columns of an inbox `predictions.csv` (one probability column per class)."""
    return ["file", "sha256", "predicted_class", *classes, "model_salt", "cam", "reason"]


def asset_dir() -> Path:
    return data_dir() / INBOX_PREDICTIONS


@dataclass(frozen=True)
class VerdictStore:
    """Rows and CAMs by sha256, for one champion and code version: immutable once written."""

    key: str

    @classmethod
    def of(cls, champion_salt: str, version: str) -> Self:
        return cls(
            compute_salt(
                f"{INBOX_PREDICTIONS}/scored", version, {}, {CHAMPION_MODEL: champion_salt}
            )
        )

    def _path(self, sha: str, suffix: str) -> Path:
        return asset_dir() / SCORED_DIR / self.key / sha[:2] / f"{sha}{suffix}"

    def cam(self, sha: str) -> str:
        """The CAM's path relative to any output folder (they are siblings)."""
        return f"../{SCORED_DIR}/{self.key}/{sha[:2]}/{sha}.png"

    def get(self, sha: str) -> dict[str, str] | None:
        path = self._path(sha, ".json")
        try:
            row = read_json(path)
        except (FileNotFoundError, DamagedFileError):
            return None  # a damaged entry (a crash mid-write on a disk that lied) is rescored
        return row if isinstance(row, dict) and row.get("sha256") == sha else None

    def put(self, row: dict[str, str], png: bytes) -> None:
        """Store a scored row and its overlay: the PNG first, so a verdict has its picture."""
        sha = row["sha256"]
        self._path(sha, "").parent.mkdir(parents=True, exist_ok=True)
        write_bytes(self._path(sha, ".png"), png)
        write_bytes(self._path(sha, ".json"), json.dumps(row).encode())


def latest_pointer(root: Path, champion_salt: str) -> Path:
    inbox = hashlib.sha256(os.fsencode(str(root))).hexdigest()[:16]
    return asset_dir() / LATEST_DIR / f"{inbox}-{champion_salt}.json"


def previous_output(
    root: Path, champion_salt: str, version: str, warn: Callable[[str], None]
) -> Path | None:
    """The newest complete output of this inbox by this champion and code version, or None.

    Only the pointer is read, never the siblings: a damaged old folder cannot stop a run. A
    pointer or folder that cannot be used is named in a warning and every file is read again.
    """
    pointer = latest_pointer(root, champion_salt)
    if not pointer.exists():
        return None
    try:
        salt = pointer_salt(pointer)
        if not _SALT_RE.fullmatch(salt):
            raise DamagedFileError(f"{pointer} is damaged (no salt)")
        folder = salted_dir(INBOX_PREDICTIONS, salt)
        manifest = read_manifest(folder)
        same = (
            manifest.code_version == version
            and manifest.config.get("inbox") == str(root)
            and manifest.upstream.get(CHAMPION_MODEL) == champion_salt
        )
    except (DamagedFileError, OSError, KeyError, TypeError, AttributeError) as exc:
        warn(f"previous inbox output unusable ({pointer}: {exc}); reading every file again")
        return None
    return folder if same else None


class _Previous:
    """The previous output's index rows, looked up in listing order (a streaming merge)."""

    def __init__(self, folder: Path | None, columns: list[str], warn: Callable[[str], None]):
        self._rows = self._read(folder, columns, warn) if folder else iter(())
        self._row = next(self._rows, None)

    @staticmethod
    def _read(folder: Path, columns: list[str], warn: Callable[[str], None]) -> Iterator[list]:
        path = folder / INDEX_CSV
        try:
            with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
                reader = csv.reader(f)
                if next(reader, None) != columns:
                    warn(f"{path} has other columns; reading every file again")
                    return
                for row in reader:
                    if len(row) == len(columns):
                        yield row
        except (OSError, csv.Error) as exc:
            warn(f"{path} is damaged ({exc}); the files after it are read again")

    def find(self, rel: str) -> list[str] | None:
        key = name_key(rel)
        while self._row is not None and name_key(self._row[0]) < key:
            self._row = next(self._rows, None)
        return self._row if self._row is not None and self._row[0] == rel else None


@asset(
    name=INBOX_PREDICTIONS,
    group_name=SERVING_GROUP,
    code_version=CODE_VERSION,
    ins={"champion_model": AssetIn(champion_model.key)},
    description="A class, probabilities and a CAM overlay for every file in `$OCT_INBOX_DIR` "
    "(default `$OCT_DATA_DIR/inbox`), by the champion, each on the bytes its sha256 names. "
    "Bytes the champion already scored are not scored again, an unchanged file is not even "
    "read; every other file gets a row with the reason.",
)
def inbox_predictions(context: AssetExecutionContext, champion_model: Artifact) -> Output[Artifact]:
    root = inbox_dir()
    if not root.is_dir():
        context.log.warning(f"inbox {root} does not exist (set OCT_INBOX_DIR): nothing to score")
    chosen = json.loads((champion_model.path / CHAMPION_JSON).read_text())["model"]
    with listed_inbox(root) as entries:

        def build(tmp: Path) -> dict[str, Any]:
            return score_inbox(context, root, entries, champion_model.salt, chosen, tmp)

        output = salted_output(
            context,
            config={"inbox": str(root)},
            upstream={
                CHAMPION_MODEL: champion_model.salt,
                "inbox_fingerprint": entries.fingerprint,
            },
            build=build,
            describe=describe_inbox,
        )
    pointer = latest_pointer(root, champion_model.salt)
    pointer.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(pointer, {"inbox": str(root), "salt": output.value.salt})
    return output


@dataclass
class _Tally:
    """What a run did, for the manifest and the UI."""

    n_files: int = 0
    hashed: int = 0
    scored_now: int = 0
    n_scored: int = 0
    bad: list[str] = field(default_factory=list)
    n_bad: int = 0
    hidden: list[str] = field(default_factory=list)
    n_hidden: int = 0
    predicted: dict[str, int] = field(default_factory=dict)
    tiles: list[tuple[str, str]] = field(default_factory=list)


def score_inbox(
    context: AssetExecutionContext,
    root: Path,
    entries: Listing,
    champion_salt: str,
    chosen: dict[str, Any],
    tmp: Path,
) -> dict[str, Any]:
    """Write `predictions.csv` and `inbox_index.csv` into `tmp`, streaming the listing."""
    from oct_assets.ml.plots import overlay_sheet_png
    from oct_assets.serving.score import BATCH, Scorer, overlay_png

    model_dir = data_dir() / chosen["model_dir"]
    classes = list(ModelInfo.read(model_dir).classes)
    columns = inbox_columns(classes)
    index_columns = ["name", "identity", *columns[1:]]
    version = code_version(context)
    store = VerdictStore.of(champion_salt, version)
    warn = context.log.warning
    before = previous_output(root, champion_salt, version, warn)
    previous = _Previous(before, index_columns, warn)
    tally = _Tally(predicted=dict.fromkeys(classes, 0))
    scorer: Scorer | None = None
    # (name, identity, row, input square or None): rows wait here until their batch is scored
    pending: list[tuple[str, str, dict[str, str], Any]] = []
    waiting = 0  # of them, scans to score
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if entries.n_files else -1
    real_root = os.path.realpath(root)
    with (
        open(tmp / PREDICTIONS_CSV, "w", newline="", encoding="utf-8") as public,
        open(tmp / INDEX_CSV, "w", newline="", encoding="utf-8", errors="surrogateescape") as idx,
    ):
        # The file system's clock now: a file changed since is read again next run.
        settled_before_ns = os.fstat(idx.fileno()).st_mtime_ns

        def read_rel(rel: str) -> ScanBytes:
            return read_scan(root_fd, real_root, rel, settled_before_ns)

        rows_out, index_out = csv.writer(public), csv.writer(idx)
        rows_out.writerow(columns)
        index_out.writerow(index_columns)

        def flush() -> None:
            nonlocal waiting
            waiting = 0
            todo = [k for k, p in enumerate(pending) if p[3] is not None]
            if todo:
                scores = scorer.score([pending[k][3] for k in todo])
                for k, s in zip(todo, scores, strict=True):
                    row = pending[k][2]
                    row["predicted_class"] = s.predicted
                    row.update(
                        {c: f"{p:.6f}" for c, p in zip(classes, s.probabilities, strict=True)}
                    )
                    row["model_salt"] = chosen["model_salt"]
                    row["cam"] = store.cam(row["sha256"])
                    store.put(row, overlay_png(s))
                tally.scored_now += len(todo)
            for name, identity, row, _ in pending:
                _count(tally, name, row)
                rows_out.writerow([display_name(name), *(row.get(c, "") for c in columns[1:])])
                index_out.writerow([name, identity, *(row.get(c, "") for c in columns[1:])])
            pending.clear()

        try:
            for e in entries:
                if e.kind == HIDDEN:
                    tally.n_hidden += 1
                    if len(tally.hidden) < SHOWN:
                        tally.hidden.append(_shown(e.rel))
                    continue
                tally.n_files += 1
                old = previous.find(e.rel)
                if e.kind == FILE and old is not None and old[1] and old[1] == e.identity:
                    row = dict(zip(columns[1:], old[2:], strict=True))
                    pending.append((e.rel, old[1], row, None))
                elif e.kind == OTHER:
                    pending.append((e.rel, "", {"reason": e.problem}, None))
                else:
                    if scorer is None:
                        scorer = Scorer(model_dir)
                    pending.append(_read_one(read_rel, e, store, scorer))
                    tally.hashed += bool(pending[-1][2].get("sha256"))  # read, not refused
                    waiting += pending[-1][3] is not None
                if waiting >= BATCH or len(pending) >= FLUSH_ROWS:
                    flush()
            flush()
        finally:
            if root_fd >= 0:
                os.close(root_fd)
    if tally.tiles:
        tiles = [(caption, tmp / cam) for caption, cam in tally.tiles]
        (tmp / CONTACT_SHEET_PNG).write_bytes(overlay_sheet_png(tiles))
    for line in tally.bad[:20]:
        context.log.warning(f"not scored: {line}")
    context.log.info(
        f"{tally.n_files} files in {root}: {tally.hashed} read, {tally.scored_now} scored now, "
        f"{tally.n_scored - tally.scored_now} reused (previous output: {before})"
    )
    return {
        "inbox": str(root),
        "model_asset": chosen["model_asset"],
        "model_salt": chosen["model_salt"],
        "previous": str(before) if before else None,
        "n_files": tally.n_files,
        "hashed": tally.hashed,
        "n_scored": tally.n_scored,
        "scored_now": tally.scored_now,
        "reused": tally.n_scored - tally.scored_now,
        "n_bad": tally.n_bad,
        "bad": tally.bad,
        "n_hidden": tally.n_hidden,
        "hidden": tally.hidden,
        "predicted": tally.predicted,
    }


def _read_one(
    read_rel: Callable[[str], ScanBytes], e: InboxEntry, store: VerdictStore, scorer: Any
) -> tuple[str, str, dict[str, str], Any]:
    """Read a file once; its row from the verdict store, or its decoded input to score."""
    read = read_rel(e.rel)
    if read.data is None:
        return e.rel, "", {"reason": read.reason or ""}, None
    identity = read.identity if e.kind == FILE else ""  # a link is followed afresh every time
    known = store.get(read.sha256)
    if known is not None:
        return e.rel, identity, known, None
    image, reason = scorer.decode(read.data)
    return e.rel, identity, {"sha256": read.sha256, "reason": reason or ""}, image


def _count(tally: _Tally, name: str, row: dict[str, str]) -> None:
    if row.get("predicted_class"):
        tally.n_scored += 1
        tally.predicted[row["predicted_class"]] = tally.predicted.get(row["predicted_class"], 0) + 1
        if len(tally.tiles) < SHEET_TILES:
            caption = f"{Path(display_name(name)).name}: {row['predicted_class']}"
            tally.tiles.append((f"{caption} {float(row[row['predicted_class']]):.2f}", row["cam"]))
    if row.get("reason"):
        tally.n_bad += 1
        if len(tally.bad) < SHOWN:
            tally.bad.append(f"{_shown(name)}: {row['reason']}")


def _shown(name: str) -> str:
    """A name for logs and markdown: valid UTF-8, control characters (a newline) escaped."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in display_name(name))


def describe_inbox(folder: Path, s: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "inbox": MetadataValue.path(s["inbox"]),
        "model": f"{s['model_asset']} {s['model_salt']}",
        "n_files": s["n_files"],
        "hashed": s["hashed"],
        "n_scored": s["n_scored"],
        "scored_now": s["scored_now"],
        "reused": s["reused"],
        "n_bad": s["n_bad"],
        "n_hidden_left_out": s["n_hidden"],
        "predicted": MetadataValue.json(s["predicted"]),
        "predictions_csv": MetadataValue.path(str(folder / PREDICTIONS_CSV)),
    }
    if s["bad"]:
        title = f"Files with no diagnosis ({s['n_bad']} in all), and why:"
        meta["bad_files"] = listing(title, s["bad"])
    if s["hidden"]:
        title = f"Hidden files and folders left out ({s['n_hidden']} in all):"
        meta["hidden_left_out"] = listing(title, s["hidden"])
    if (folder / CONTACT_SHEET_PNG).is_file():
        meta["contact_sheet"] = png_markdown(folder / CONTACT_SHEET_PNG, "CAM overlays")
    return meta
