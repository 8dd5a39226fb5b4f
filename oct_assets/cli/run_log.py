"""The run log of `python -m oct_assets`: one readable line per step on the terminal, the full
Dagster log (DEBUG included) in a file.

Two Dagster loggers replace the default console logger for that command only; the UI and the
`dagster` CLI keep Dagster's own.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from dagster import Field, InitLoggerContext, logger

from oct_assets.assets.graph import LOCAL_GRAPH
from oct_assets.contracts.train_log import parse_epoch_line

# Steps that materialise an asset (the others run checks, whose verdict is their line).
ASSET_STEPS = frozenset(a.key.to_user_string() for a in LOCAL_GRAPH)
# Messages of our assets worth a line of their own (the rest goes to the file only).
SHOWN_PREFIXES = ("cache hit", "building", "scanned", "sampled", "accuracy", "waited")


class StepLines(logging.Handler):
    """Turns Dagster's event stream into one short line per step, plus training progress."""

    def emit(self, record: logging.LogRecord) -> None:
        line = step_line(record)
        if line is not None:
            print(f"{time.strftime('%H:%M:%S')} {line}", file=sys.stderr, flush=True)


def step_line(record: logging.LogRecord) -> str | None:
    """The terminal line for one Dagster log record, or None to leave it to the file."""
    meta: dict[str, Any] = getattr(record, "dagster_meta", None) or {}
    step = meta.get("step_key") or "run"
    text = str(meta.get("orig_message") or record.getMessage())
    event = meta.get("dagster_event")
    if event is not None:
        kind = event.event_type_value
        if kind == "STEP_FAILURE":
            error = event.event_specific_data.error
            return f"{step}: FAILED: {root_cause(error) if error else text}"
        if kind == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            verdict = "passed" if evaluation.passed else "FAILED"
            described = f": {evaluation.description}" if evaluation.description else ""
            return f"check {evaluation.check_name}: {verdict}{described}"[:300]
        if kind == "STEP_SUCCESS" and step in ASSET_STEPS:  # a check's step: its verdict says it
            seconds = event.event_specific_data.duration_ms / 1000
            return f"{step}: done in {seconds:.1f} s"
        return None
    if (epoch := parse_epoch_line(text)) is not None:
        return f"{step}: {epoch_summary(epoch)}"
    if record.levelno >= logging.WARNING:
        return f"{step}: {logging.getLevelName(record.levelno)}: {text}"
    if text.startswith(SHOWN_PREFIXES):
        return f"{step}: {text}"
    return None


def root_cause(error: Any) -> str:
    """The innermost cause of a Dagster error, as one line: "Error occurred while executing
    op" says nothing; the `OSError: [Errno 28] No space left on device: ...` under it does."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    lines = error.message.strip().splitlines()
    return lines[-1] if lines else error.cls_name or "unknown error"


def epoch_summary(r: dict[str, Any]) -> str:
    """The trainer's epoch record as `epoch 3: loss 0.91, accuracy 0.62, ...`."""
    parts = [f"loss {r['train_loss']:.3f}", f"accuracy {r['train_accuracy']:.3f}"]
    if "val_accuracy" in r:
        parts.append(f"val accuracy {r['val_accuracy']:.3f}")
    parts.append(f"{r['images_per_second']:.0f} images/s")
    return f"epoch {r['epoch']}: " + ", ".join(parts)


@logger(description="one readable line per step on stderr")
def step_lines_logger(init_context: InitLoggerContext) -> logging.Logger:
    log = logging.Logger("oct_assets.steps", level=logging.DEBUG)
    log.addHandler(StepLines())
    return log


@logger(config_schema={"path": Field(str)}, description="the full Dagster log in a file")
def file_logger(init_context: InitLoggerContext) -> logging.Logger:
    handler = logging.FileHandler(init_context.logger_config["path"])
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log = logging.Logger("oct_assets.file", level=logging.DEBUG)
    log.addHandler(handler)
    return log


LOGGERS = {"steps": step_lines_logger, "file": file_logger}
