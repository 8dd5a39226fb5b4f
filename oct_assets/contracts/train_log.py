"""The trainer's log lines that other code reads back, each written once: the terminal shows the
epoch lines (`cli/run_log.py`), and the cluster reads a requeued job's log for what its restarts
cost (`cluster/restarts.py`). Reworded here, both readers follow; reworded elsewhere, a test
fails instead of the figures silently dropping to zero."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

# `who` is "" for a single process, `rank N ` under torchrun.
LOG_FORMAT = "%(asctime)s {who}%(levelname)s %(message)s"
STAMPED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) (?:rank \d+ )?[A-Z]+ (.*)$")

EPOCH_PREFIX = "epoch "
STOPPED_PREFIX = "stopped by "
RESUMING_PREFIX = "resuming from "
AT_EPOCH_STEP = re.compile(r" in epoch (\d+) at step (\d+)")


def epoch_line(record: dict[str, Any]) -> str:
    """One epoch's record (`epoch`, `train_loss`, ...), logged at its end, after its checkpoint."""
    return EPOCH_PREFIX + json.dumps(record)


def parse_epoch_line(text: str) -> dict[str, Any] | None:
    """The record of an `epoch_line`, or None for any other text."""
    if not text.startswith(EPOCH_PREFIX + "{"):
        return None
    try:
        record = json.loads(text.removeprefix(EPOCH_PREFIX))
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def stopped_line(why: str, epoch: int, step: int, path: Path) -> str:
    """The trainer stopped by a signal, after writing its checkpoint at `path`."""
    return f"{STOPPED_PREFIX}{why} in epoch {epoch} at step {step}; resume from {path}"


def resuming_line(path: Path, epoch: int, step: int) -> str:
    """The trainer carrying on from the checkpoint at `path`."""
    return f"{RESUMING_PREFIX}{path} in epoch {epoch} at step {step}"
