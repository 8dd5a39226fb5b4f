"""The ensemble model folder: a `model.json` of `"kind": "ensemble"` naming member model
folders, no weights of its own, and the network that averages the members' probabilities.

Members are named by asset and salt and found beside the ensemble in the salted store
(`<data>/<asset>/<salt>/`), so a data folder that moves keeps its ensembles. Loading is
`predict.load_model`'s: every caller of a model folder (evaluation, the champion gate, the
inbox, the predict command, the model card, the TorchScript export) takes an ensemble as it
takes one model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from oct_assets.contracts.errors import OctMLError

ENSEMBLE_KIND = "ensemble"
# What every member must share with the others: the input the ensemble is fed, and its output.
GEOMETRY = ("size", "fit", "channels")
TINY = math.ldexp(1.0, -126)  # the smallest normal float32


def is_ensemble(meta: dict[str, Any]) -> bool:
    return meta.get("kind") == ENSEMBLE_KIND


def member_dirs(model_dir: Path, meta: dict[str, Any]) -> list[Path]:
    """The members' folders: `<data>/<asset>/<salt>/` beside `model_dir` (`<data>/<a>/<s>/`)."""
    data = Path(model_dir).resolve().parent.parent
    return [data / m["asset"] / m["salt"] for m in meta["members"]]


def check_members(model_dir: Path, metas: Sequence[dict[str, Any]], dirs: Sequence[Path]) -> None:
    """Refuse members that are not single models or that disagree with the first on classes or
    input geometry, naming the member and what differs."""
    if not metas:
        raise OctMLError(f"ensemble {model_dir} has no members")
    first = metas[0]
    for meta, d in zip(metas, dirs, strict=True):
        if is_ensemble(meta):
            raise OctMLError(f"ensemble {model_dir}: member {d} is itself an ensemble")
        if meta["classes"] != first["classes"]:
            raise OctMLError(
                f"ensemble {model_dir}: member {d} has classes {meta['classes']}, "
                f"{dirs[0]} has {first['classes']}"
            )
        for key in GEOMETRY:
            if meta["input"].get(key) != first["input"].get(key):
                raise OctMLError(
                    f"ensemble {model_dir}: member {d} has input {key} "
                    f"{meta['input'].get(key)!r}, {dirs[0]} has {first['input'].get(key)!r}"
                )


def ensemble_meta(
    members: Sequence[tuple[str, str]], member_metas: Sequence[dict[str, Any]], sample_salt: str
) -> dict[str, Any]:
    """The ensemble's `model.json`: its members (asset, salt), and the classes, input and config
    every caller reads from a model folder (the first member's, with flip TTA off: each member
    applies its own inside the ensemble)."""
    first = member_metas[0]
    return {
        "kind": ENSEMBLE_KIND,
        "members": [{"asset": a, "salt": s} for a, s in members],
        "classes": list(first["classes"]),
        "input": dict(first["input"]),
        "architecture": f"ensemble of {len(members)} {first.get('architecture')}",
        "config": {**first["config"], "tta_flip": False},
        "members_tta_flip": [bool(m["config"].get("tta_flip", False)) for m in member_metas],
        "sample_salt": sample_salt,
        "min_image_size": first.get("min_image_size"),
        "torch_version": first.get("torch_version"),
        "device": first.get("device"),
    }


class EnsembleNet(nn.Module):
    """The members' mean softmax probability, returned as its log: callers apply softmax to
    logits, and softmax(log p) = p for a distribution p.

    Each member runs as evaluation runs it (its own flip TTA on its logits), so the ensemble's
    probabilities are exactly the mean of what each member alone would give.
    """

    def __init__(self, members: Sequence[nn.Module], tta_flips: Sequence[bool]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.tta_flips = [bool(t) for t in tta_flips]
        self.in_channels = members[0].in_channels

    def forward(self, x: Tensor) -> Tensor:
        probs = []
        for net, tta in zip(self.members, self.tta_flips, strict=True):
            logits = net(x).float()
            if tta:
                logits = (logits + net(x.flip(-1)).float()) / 2
            probs.append(torch.softmax(logits, 1))
        # log of the mean; the floor keeps a class no member gives any weight finite
        return torch.log(torch.stack(probs).mean(0).clamp_min(TINY))
