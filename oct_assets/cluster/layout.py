"""The cluster folder's layout, defined once: where models, jobs, samples, the decode cache and
the uploaded code live under the remote working folder (`OCT_CLUSTER_REMOTE_DIR`).

    models/<salt>/     a trained model (model.pt, model.json), published by one `mv`
    jobs/<salt>/       job.json, the batch script, train_config.json, slurm-<id>.log
    checkpoints/<salt>/  the trainer's checkpoint while its model is not yet published
    samples/<salt>/    a staged reduced_sample
    cache/             the trainer's decode cache, shared by every job
    code/<digest>/     this project's ML code, named by its content hash
    envs/<hash>/       the managed training venv (`environment.py`), with <hash>.lock beside it
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

MODELS, JOBS, SAMPLES, CACHE, CODE = "models", "jobs", "samples", "cache", "code"
CHECKPOINTS = "checkpoints"
ENVS = "envs"
# The model folder that fetch mode and the sensor read unless told otherwise (relative: under
# the remote working folder).
LATEST_MODEL = posixpath.join(MODELS, "latest")


@dataclass(frozen=True)
class RemoteLayout:
    """Absolute remote paths of the cluster folder's parts, for the folder `root`."""

    root: str

    def model(self, salt: str) -> str:
        return posixpath.join(self.root, MODELS, salt)

    def job(self, salt: str) -> str:
        return posixpath.join(self.root, JOBS, salt)

    def checkpoints(self, salt: str) -> str:
        """Where every job of `salt` checkpoints (kept across requeues and resubmissions)."""
        return posixpath.join(self.root, CHECKPOINTS, salt)

    def sample(self, salt: str) -> str:
        return posixpath.join(self.root, SAMPLES, salt)

    @property
    def cache(self) -> str:
        return posixpath.join(self.root, CACHE)

    def code(self, digest: str) -> str:
        return posixpath.join(self.root, CODE, digest)

    def env(self, digest: str) -> str:
        return posixpath.join(self.root, ENVS, digest)
