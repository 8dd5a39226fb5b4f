"""Which Python environment trains: Dagster's own, or another one that has torch."""

from __future__ import annotations

import os
import sys

from dagster import ConfigurableResource
from pydantic import Field

from oct_assets.paths import PROJECT_ROOT


class TrainingEnvironment(ConfigurableResource):
    """The interpreter that runs `python -m oct_assets.ml.train` through Dagster Pipes.

    The other environment needs only torch, numpy and pillow (and optionally dagster-pipes for
    streamed metrics); this project's source is put on its PYTHONPATH.
    """

    python: str | None = Field(
        default=None, description="python executable for training; default: Dagster's own"
    )

    def executable(self) -> str:
        return self.python or sys.executable

    def env(self) -> dict[str, str]:
        """Environment additions: this project's source first on PYTHONPATH."""
        paths = [str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]
        return {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}
