"""A Slurm batch job and its script, no I/O: what `sbatch` is asked for and how."""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from oct_assets.cluster.settings import NO_SPACE, SbatchOptions


@dataclass(frozen=True, kw_only=True)
class SlurmJobSpec(SbatchOptions):
    """Parameters of one batch job: the sbatch options (`SbatchOptions`, declared there once,
    with sbatch's own defaults) plus what the job is and runs.

    Attributes:
        name: job name; also names the script `<workdir>/<name>.sbatch`.
        command: shell command line the job runs, e.g. `python -m pkg.train --out DIR`.
        workdir: remote folder the job runs in (`--chdir`); relative: under the session's folder.
        output: log file for stdout and stderr, relative to `workdir`; of Slurm's patterns use
            only `%j` (job id) and `%x` (job name), which `SlurmJob.log_path` resolves.
        setup: shell lines run before `command` (`module load ...`, `source venv/bin/activate`).
    """

    WHAT = "Slurm job spec"

    name: str
    command: str
    workdir: str
    output: str = "slurm-%j.log"
    setup: Sequence[str] = ()

    def problems(self) -> list[str]:
        problems = [
            f"{label}={getattr(self, label)!r} must be non-empty without whitespace"
            for label in ("name", "workdir", "output")
            if not NO_SPACE.match(getattr(self, label))
        ]
        problems += super().problems()
        if "\n" in self.command:
            problems.append("command must be one line; put preparation into setup")
        return problems

    @property
    def output_path(self) -> str:
        return posixpath.join(self.workdir, self.output)

    @property
    def script_path(self) -> str:
        return posixpath.join(self.workdir, f"{self.name}.sbatch")


def render_batch_script(spec: SlurmJobSpec) -> str:
    """The sbatch script for `spec`: directives, strict shell options, setup, then the command."""
    directives = [
        f"--job-name={spec.name}",
        f"--chdir={spec.workdir}",
        f"--output={spec.output_path}",
        f"--time={spec.time}",
        f"--nodes={spec.nodes}",
        f"--ntasks-per-node={spec.ntasks_per_node}",
        f"--cpus-per-task={spec.cpus_per_task}",
    ]
    optional = {
        "partition": spec.partition,
        "account": spec.account,
        "qos": spec.qos,
        "constraint": spec.constraint and shlex.quote(spec.constraint),
        "mem": spec.mem,
        "gpus-per-node": spec.gpus_per_node or None,
        "gres": spec.gres,
    }
    directives.extend(f"--{name}={value}" for name, value in optional.items() if value)
    directives.extend(spec.extra_directives)
    lines = ["#!/bin/bash", *(f"#SBATCH {d}" for d in directives), "set -eo pipefail"]
    lines.append('echo "[oct] job ${SLURM_JOB_ID} on $(hostname) started $(date -Is)"')
    lines.extend(spec.setup)
    lines.append(spec.command)
    return "\n".join(lines) + "\n"
