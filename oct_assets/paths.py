"""Where things live, from the environment: the data folder and the image root.

Read on every call, never at import time, so a test or a run that sets `OCT_DATA_DIR` sees it.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_DATA_DIR = "OCT_DATA_DIR"
ENV_IMAGES_DIR = "OCT_IMAGES_DIR"
ENV_INBOX_DIR = "OCT_INBOX_DIR"

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """Root of all outputs: `$OCT_DATA_DIR`, else `data/` of the project."""
    return Path(os.environ.get(ENV_DATA_DIR) or PROJECT_ROOT / "data").resolve()


def images_dir() -> Path:
    """Image root: `$OCT_IMAGES_DIR`, else `$OCT_DATA_DIR/OCT2017`.

    Raises ValueError when `OCT_IMAGES_DIR` is set but empty: a variable meant to name real
    images must never fall back to the synthetic demo.
    """
    explicit = os.environ.get(ENV_IMAGES_DIR)
    if explicit is None:
        return data_dir() / "OCT2017"
    if not explicit.strip():
        raise ValueError(
            f"{ENV_IMAGES_DIR} is set but empty; point it at an OCT2017 folder, or unset it "
            "for the synthetic demo"
        )
    return Path(explicit).expanduser().resolve()


def images_dir_is_explicit() -> bool:
    """True when the user named an image root: then it is never replaced by synthetic data."""
    return ENV_IMAGES_DIR in os.environ


def inbox_dir() -> Path:
    """New, unlabelled scans to diagnose: `$OCT_INBOX_DIR`, else `$OCT_DATA_DIR/inbox`."""
    explicit = os.environ.get(ENV_INBOX_DIR)
    return Path(explicit).expanduser().resolve() if explicit else data_dir() / "inbox"
