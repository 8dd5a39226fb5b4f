"""The ensemble model folder: a `model.json` of kind ensemble (`ModelInfo`) naming member model
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

import torch
from torch import Tensor, nn

from oct_assets.contracts.errors import OctMLError
from oct_assets.contracts.model_info import (
    ENSEMBLE_KIND,
    EnsembleMember,
    InputGeometry,
    ModelInfo,
)
from oct_assets.ml.config import TrainConfig

TINY = math.ldexp(1.0, -126)  # the smallest normal float32


def member_dirs(model_dir: Path, info: ModelInfo) -> list[Path]:
    """The members' folders: `<data>/<asset>/<salt>/` beside `model_dir` (`<data>/<a>/<s>/`)."""
    data = Path(model_dir).resolve().parent.parent
    return [data / m.asset / m.salt for m in info.members]


def check_members(model_dir: Path, infos: Sequence[ModelInfo], dirs: Sequence[Path]) -> None:
    """Refuse members that are not single models or that disagree with the first on classes or
    input geometry (what every member must share: the input the ensemble is fed, and its
    output), naming the member and what differs."""
    if not infos:
        raise OctMLError(f"ensemble {model_dir} has no members")
    first = infos[0]
    for info, d in zip(infos, dirs, strict=True):
        if info.is_ensemble:
            raise OctMLError(f"ensemble {model_dir}: member {d} is itself an ensemble")
        if info.classes != first.classes:
            raise OctMLError(
                f"ensemble {model_dir}: member {d} has classes {list(info.classes)}, "
                f"{dirs[0]} has {list(first.classes)}"
            )
        for key in ("size", "fit", "channels"):
            mine, theirs = getattr(info.input, key), getattr(first.input, key)
            if mine != theirs:
                raise OctMLError(
                    f"ensemble {model_dir}: member {d} has input {key} "
                    f"{mine!r}, {dirs[0]} has {theirs!r}"
                )


def ensemble_info(
    members: Sequence[tuple[str, str]], member_infos: Sequence[ModelInfo], sample_salt: str
) -> ModelInfo:
    """The ensemble's `model.json`: its members (asset, salt), and the classes, input and config
    every caller reads from a model folder (the first member's, with flip TTA off: each member
    applies its own inside the ensemble)."""
    first = member_infos[0]
    return ModelInfo(
        kind=ENSEMBLE_KIND,
        members=tuple(EnsembleMember(asset=a, salt=s) for a, s in members),
        classes=first.classes,
        input=InputGeometry(first.input.size, first.input.channels, first.input.fit),
        architecture=f"ensemble of {len(members)} {first.architecture}",
        config={**first.config, "tta_flip": False},
        members_tta_flip=tuple(TrainConfig.from_saved(m.config).tta_flip for m in member_infos),
        sample_salt=sample_salt,
        min_image_size=first.min_image_size,
        torch_version=first.torch_version,
        device=first.device,
    )


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
