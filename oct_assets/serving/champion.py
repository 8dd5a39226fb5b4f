"""The champion rule and the champion folder's format: plain Python, no torch, no Dagster.

A candidate is one evaluation of a model folder on a sample's test split (a `predictions` or
`cluster_predictions` folder). The rule compares only candidates evaluated on the same sample
salt, so accuracies on different test splits are never ranked against each other.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from oct_assets.contracts.errors import DamagedFileError
from oct_assets.contracts.files import read_json, write_bytes
from oct_assets.contracts.manifest import pointer_salt

# In a champion folder: the pointer to the chosen model (salt, folder relative to the data
# folder, the evaluation it won with), the model card and the TorchScript export.
CHAMPION_JSON = "champion.json"
MODEL_CARD_MD = "model_card.md"
MODEL_TS = "model.ts"
EXPORT_CHECK_JSON = "export_check.json"  # max abs difference of model.ts from the loader
# Beside the champion's salted folders: which one is the champion now. Written after the folder
# is complete, read by the CLI, the inbox sensor and the next promotion (no Dagster needed).
CURRENT_JSON = "current.json"


@dataclass(frozen=True)
class Candidate:
    """A model and its scores on one test split."""

    model_asset: str  # "trained_model" or "cluster_model"
    model_salt: str
    model_dir: str  # relative to the data folder
    sample_salt: str  # the sample whose test split scored it
    evaluation_asset: str  # "predictions" or "cluster_predictions"
    evaluation_salt: str
    accuracy: float
    macro_f1: float

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candidate:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})

    def label(self) -> str:
        return f"{self.model_asset} {self.model_salt}"


@dataclass
class Decision:
    """The outcome of the rule: the champion after it (None: there is none) and why."""

    champion: Candidate | None
    promoted: bool
    reasons: list[str] = field(default_factory=list)


def decide(
    candidates: list[Candidate], current: Candidate | None, accuracy_floor: float
) -> Decision:
    """Apply the promotion rule.

    The reference split is the current champion's sample, else the first candidate's (the
    local `predictions`). Candidates on another split are refused; those below the floor are
    kept out; the best of the rest (accuracy, then macro F1) replaces the current champion only
    if it is not worse than it. With no change, the current champion stays.
    """
    reasons: list[str] = []
    reference = current.sample_salt if current else None
    if reference is None and candidates:
        reference = candidates[0].sample_salt
    eligible = []
    for c in candidates:
        if c.sample_salt != reference:
            reasons.append(
                f"{c.label()} refused: evaluated on sample {c.sample_salt}, the reference test "
                f"split is sample {reference}; scores on different splits are not compared"
            )
        elif c.accuracy < accuracy_floor:
            reasons.append(
                f"{c.label()} kept out: accuracy {c.accuracy:.4f} is below the floor "
                f"{accuracy_floor:.4f}"
            )
        else:
            eligible.append(c)
    if not eligible:
        stays = f"{current.label()} stays champion" if current else "there is no champion"
        return Decision(current, False, [*reasons, f"no eligible candidate: {stays}"])
    best = max(eligible, key=lambda c: (c.accuracy, c.macro_f1))
    if current is None:
        return Decision(best, True, [*reasons, f"{best.label()} promoted: first champion"])
    if best.model_salt == current.model_salt:
        return Decision(current, False, [*reasons, f"{current.label()} stays: still the best"])
    if (best.accuracy, best.macro_f1) < (current.accuracy, current.macro_f1):
        return Decision(
            current,
            False,
            [
                *reasons,
                f"{best.label()} kept out: accuracy {best.accuracy:.4f} / macro F1 "
                f"{best.macro_f1:.4f} is worse than the champion's {current.accuracy:.4f} / "
                f"{current.macro_f1:.4f}; {current.label()} stays",
            ],
        )
    return Decision(
        best,
        True,
        [
            *reasons,
            f"{best.label()} promoted: accuracy {best.accuracy:.4f} against the champion's "
            f"{current.accuracy:.4f} on sample {reference}",
        ],
    )


def write_current(champion_root: Path, salt: str) -> None:
    """Mark the champion folder `<champion_root>/<salt>` as the current champion."""
    champion_root.mkdir(parents=True, exist_ok=True)
    write_bytes(champion_root / CURRENT_JSON, (json.dumps({"salt": salt}) + "\n").encode())


def read_current(champion_root: Path) -> tuple[Path, dict[str, Any]] | None:
    """The current champion's folder and its `champion.json`, or None when there is none.

    A pointer that names a missing or damaged folder is an error, never "no champion": read as
    none, the next promotion would pass the gate as the first champion, against nothing.
    """
    pointer = champion_root / CURRENT_JSON
    if not pointer.is_file():
        return None
    salt = pointer_salt(pointer)
    folder = champion_root / salt
    info_path = folder / CHAMPION_JSON
    if not info_path.is_file():
        raise DamagedFileError(
            f"{pointer} names champion {salt}, but {info_path} is missing: restore "
            f"that folder, or choose a champion afresh (champion_model config `reset: true`)"
        )
    return folder, read_json(info_path)


def champion_info(decision: Decision, rule: dict[str, Any]) -> dict[str, Any]:
    """The content of `champion.json` for a decided champion."""
    if decision.champion is None:
        raise ValueError("no champion to describe")
    return {"model": asdict(decision.champion), "rule": rule, "reasons": decision.reasons}
