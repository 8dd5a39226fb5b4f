"""A Slurm batch job's settings and its script, no I/O: what `sbatch` is asked for and how."""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

_NO_SPACE = re.compile(r"^\S+$")
_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
_MEM = re.compile(r"^\d+[KMGT]?$")


@dataclass(frozen=True)
class SlurmJobSpec:
    """Parameters of one batch job.

    Attributes:
        name: job name; also names the script `<workdir>/<name>.sbatch`.
        command: shell command line the job runs, e.g. `python -m pkg.train --out DIR`.
        workdir: remote folder the job runs in (`--chdir`); relative: under the session's folder.
        output: log file for stdout and stderr, relative to `workdir`; of Slurm's patterns use
            only `%j` (job id) and `%x` (job name), which `SlurmJob.log_path` resolves.
        nodes, ntasks_per_node, gpus_per_node, cpus_per_task, mem, gres: the allocation
            (`--mem` is per node); `gres` is the alternative to `gpus_per_node`.
        partition, account, qos, constraint, time: where and how long.
        setup: shell lines run before `command` (`module load ...`, `source venv/bin/activate`).
        extra_directives: further sbatch options, e.g. `--exclusive`, `--mail-type=END`.
    """

    name: str
    command: str
    workdir: str
    output: str = "slurm-%j.log"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    time: str = "01:00:00"
    nodes: int = 1
    ntasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem: str | None = None
    gres: str | None = None
    setup: Sequence[str] = ()
    extra_directives: Sequence[str] = ()

    def __post_init__(self) -> None:
        problems = []
        for label in ("name", "workdir", "output", "partition", "account", "qos", "gres"):
            value = getattr(self, label)
            if value is not None and not _NO_SPACE.match(value):
                problems.append(f"{label}={value!r} must be non-empty without whitespace")
        if self.constraint is not None and ("\n" in self.constraint or not self.constraint):
            problems.append(f"constraint={self.constraint!r} must be one non-empty line")
        if not _TIME.match(self.time):
            problems.append(f"time={self.time!r} is not a Slurm time (D-HH:MM:SS, HH:MM:SS, MM)")
        if self.mem is not None and not _MEM.match(self.mem):
            problems.append(f"mem={self.mem!r} is not a Slurm size such as 4G or 500M")
        for label in ("nodes", "ntasks_per_node", "cpus_per_task"):
            if getattr(self, label) < 1:
                problems.append(f"{label}={getattr(self, label)} must be >= 1")
        if self.gpus_per_node < 0:
            problems.append(f"gpus_per_node={self.gpus_per_node} must be >= 0")
        if self.gpus_per_node and self.gres:
            problems.append("set gpus_per_node or gres, not both")
        if "\n" in self.command:
            problems.append("command must be one line; put preparation into setup")
        for directive in self.extra_directives:
            if not directive.startswith("--") or "\n" in directive:
                problems.append(f"extra directive {directive!r} must be one `--option=value`")
        if problems:
            raise ValueError("invalid Slurm job spec: " + "; ".join(problems))

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
