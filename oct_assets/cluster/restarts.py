"""What the restarts of a requeued training job cost, read from its log (opened for append, so
it holds every run of the job): epochs trained twice and time lost.

Each run of the batch script starts with `[oct] job <id> on <host> started <ISO time> (restart
<n>)`; the trainer logs `epoch {...}` at every epoch end (a checkpoint follows), `stopped by ...
in epoch <e> at step <s>` when told to stop (after its checkpoint) and `resuming from ... in epoch
<e> at step <s>` when it carries on from one. Across each restart, the work after the last
checkpoint is lost, and so is the time from that checkpoint until the next run resumed (the
lost work, the wait in the queue, the start-up).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from oct_assets.contracts.train_log import (
    AT_EPOCH_STEP,
    RESUMING_PREFIX,
    STAMPED,
    STOPPED_PREFIX,
    parse_epoch_line,
)

_START = re.compile(r"^\[oct\] job \d+ on \S+ started (\S+) \(restart (\d+)\)")


@dataclass
class _Run:
    """One run of the batch script: when it started, its last checkpoint, where it resumed."""

    started: datetime
    tz: tzinfo | None
    resumed: tuple[int, datetime] | None = None  # (epoch it resumed in, when)
    epochs_done: int = 0  # epochs completed when its last checkpoint was written
    kept: datetime | None = None  # when that checkpoint was written


@dataclass(frozen=True)
class RestartCost:
    """How often the job ran again and what that cost (`restarts` as Slurm counts them)."""

    restarts: int
    runs_in_log: int
    epochs_redone: int
    time_lost_s: float | None

    def to_dict(self) -> dict[str, int | float | None]:
        return {
            "restarts": self.restarts,
            "runs_in_log": self.runs_in_log,
            "epochs_redone": self.epochs_redone,
            "time_lost_s": self.time_lost_s,
        }


def restart_cost(lines: Iterable[str], restarts: int) -> RestartCost:
    """The cost of the restarts that the job's log `lines` show; `restarts` is Slurm's count."""
    runs: list[_Run] = []
    for line in lines:
        if match := _START.match(line):
            started = datetime.fromisoformat(match.group(1))
            runs.append(_Run(started, started.tzinfo))
            continue
        stamped = STAMPED.match(line)
        if not runs or not stamped:
            continue
        run = runs[-1]
        when = datetime.fromisoformat(f"{stamped.group(1)}.{stamped.group(2)}")
        when = when.replace(tzinfo=run.tz) if run.tz else when
        message = stamped.group(3)
        if (record := parse_epoch_line(message)) is not None:
            run.epochs_done, run.kept = int(record["epoch"]), when
        elif (at := AT_EPOCH_STEP.search(message)) and message.startswith(STOPPED_PREFIX):
            run.epochs_done, run.kept = int(at.group(1)) - 1, when
        elif at and message.startswith(RESUMING_PREFIX):
            run.resumed = (int(at.group(1)), when)
            run.epochs_done, run.kept = int(at.group(1)) - 1, when
    redone, lost = 0, timedelta()
    for before, after in itertools.pairwise(runs):
        resumed_epoch, resumed_at = after.resumed or (1, after.started)
        redone += max(0, before.epochs_done - (resumed_epoch - 1))
        lost += resumed_at - (before.kept or before.started)
    seconds = round(lost.total_seconds(), 1) if len(runs) > 1 else 0.0
    return RestartCost(restarts, len(runs), redone, seconds)
