"""Train a classifier on a sample folder: `train()` and the CLI `python -m oct_assets.ml.train`.

This module stays free of torch at import time (torch is imported inside `train`): the
decode cache's spawned worker processes re-import the `-m` main module, and a light one
keeps their start-up at ~0.15 s instead of ~1.5 s. The loop itself is `oct_assets.ml.loop`.
Runs on a Slurm node with only torch/numpy/pillow; dagster_pipes is optional.

The same command runs data-parallel under torchrun, one process per GPU (or CPU share):

    torchrun --nproc_per_node 4 -m oct_assets.ml.train --sample S --out O --config C.json

Rank 0 alone writes `--out` and talks to Dagster Pipes; the other ranks log warnings only.

With `--checkpoint-dir D` the run checkpoints into D at every epoch end and when told to stop
(SIGTERM, SIGUSR2, SIGINT: it exits 128 + the signal's number after the checkpoint), and
resumes from D's checkpoint when started again with the same sample, config and world size.
Without it nothing is checkpointed and those signals keep their default effect.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oct_assets.contracts.errors import OctMLError
from oct_assets.contracts.lifetime import die_with_parent
from oct_assets.contracts.train_log import LOG_FORMAT, epoch_line
from oct_assets.ml.config import TrainConfig

log = logging.getLogger(__name__)


if TYPE_CHECKING:
    from oct_assets.ml.loop import train_model as train
else:

    def train(*args: Any, **kwargs: Any) -> dict[str, Any]:
        """`loop.train_model` (its arguments, its docstring), imported on call so spawned
        decode workers that re-import this module stay free of torch."""
        from oct_assets.ml.loop import train_model

        return train_model(*args, **kwargs)


def _pipes_context() -> AbstractContextManager[Any]:
    """The Dagster Pipes context when launched by Pipes, else a no-op yielding None.

    dagster_pipes is optional: the CLI must run on a node where it is not installed.
    """
    try:
        import dagster_pipes
    except ImportError:
        return nullcontext()
    if not dagster_pipes.PipesEnvVarParamsLoader().is_dagster_pipes_process():
        return nullcontext()
    return dagster_pipes.open_dagster_pipes()


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the process exit code (2 with a one-line error on bad input)."""
    die_with_parent()
    parser = argparse.ArgumentParser(prog="python -m oct_assets.ml.train", description=__doc__)
    parser.add_argument("--sample", type=Path, required=True, help="sample folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder for model.pt/json")
    parser.add_argument("--config", type=Path, help="JSON file of TrainConfig fields")
    parser.add_argument("--cache-dir", type=Path, help="decode cache folder")
    parser.add_argument(
        "--checkpoint-dir",
        type=Path,
        help="checkpoint every epoch (and on SIGTERM/SIGUSR2/SIGINT) here; resume from it",
    )
    args = parser.parse_args(argv)
    rank = os.environ.get("RANK", "0")  # set by torchrun; the loop validates it
    who = f"rank {rank} " if "RANK" in os.environ else ""
    # `python -m oct_assets` sets WARNING: its progress comes through Pipes, one line an epoch.
    level = os.environ.get("OCT_TRAIN_LOG_LEVEL", "INFO") if rank == "0" else "WARNING"
    logging.basicConfig(level=level, format=LOG_FORMAT.format(who=who))
    with _pipes_context() if rank == "0" else nullcontext() as pipes:
        try:
            raw = json.loads(args.config.read_text()) if args.config else {}
            if not isinstance(raw, dict):
                raise OctMLError(f"{args.config} must hold a JSON object of TrainConfig fields")
            config = TrainConfig.from_dict(raw)
            on_epoch = (lambda r: pipes.log.info(epoch_line(r))) if pipes else None
            metrics = train(
                args.sample, args.out, config, args.cache_dir, on_epoch, args.checkpoint_dir
            )
            if args.checkpoint_dir is not None:
                from oct_assets.ml.checkpoint import ignore_stop_signals  # torch is loaded now

                ignore_stop_signals()
        except (OSError, ValueError) as exc:  # OctMLError is a ValueError
            message = f"error: {exc}".splitlines()[0]
            print(message, file=sys.stderr)
            if pipes is not None:
                pipes.log.error(message)
            return 2
        except Exception as exc:
            # Imported here: this module stays free of torch (see above); the loop has it.
            from oct_assets.ml.checkpoint import TrainingStopped

            if not isinstance(exc, TrainingStopped):
                raise
            log.warning("%s", exc)  # told to stop, checkpoint written: exit as the signal asks
            if pipes is not None:
                pipes.log.warning(str(exc))
            return 128 + exc.signum
        summary = {k: v for k, v in metrics.items() if k != "history"}
        if pipes is not None:
            pipes.report_asset_materialization(metadata=summary)
        log.info("done: %s", json.dumps(summary))
        return 0


if __name__ == "__main__":
    sys.exit(main())
