"""A Slurm batch job and its script, no I/O: what `sbatch` is asked for and how.

A job with `signal_margin_s` survives its time limit and Slurm's requeues. It is requeueable
(`--requeue`) with its log opened for append (a restart adds to it), and Slurm signals its batch
shell (`--signal=B:USR2@<margin>`; USR2 because NCCL uses USR1) that much before the time
limit. The shell runs the command in the background so that its traps run at once: on USR2 it
sends SIGTERM to the command (to an srun step's tasks through `scancel --signal=TERM`: srun
answers SIGTERM by killing its tasks; torchrun passes TERM on to every rank; the trainer
checkpoints at the next step and exits), waits for it, and requeues the job unless it was
started again `max_restarts` times already. On SIGTERM (scancel, Slurm's own requeue or
preemption, the time limit) it passes TERM on, waits and exits. A restart runs the script again
from the top; the command resumes from its checkpoint.
"""

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
        finish: shell lines run once `command` has succeeded (publish its output).
        signal_margin_s: with it, the job is requeueable and stops its command and requeues
            itself this many seconds before its time limit (see the module's docstring);
            the command must stop cleanly on SIGTERM and resume when started again.
        max_restarts: starts beyond the first after which the job no longer requeues itself.
        srun_step: `command` runs as an srun job step (stopped through Slurm, see above).
    """

    WHAT = "Slurm job spec"

    name: str
    command: str
    workdir: str
    output: str = "slurm-%j.log"
    setup: Sequence[str] = ()
    finish: Sequence[str] = ()
    signal_margin_s: int | None = None
    max_restarts: int = 0
    srun_step: bool = False

    def problems(self) -> list[str]:
        problems = [
            f"{label}={getattr(self, label)!r} must be non-empty without whitespace"
            for label in ("name", "workdir", "output")
            if not NO_SPACE.match(getattr(self, label))
        ]
        problems += super().problems()
        if "\n" in self.command:
            problems.append("command must be one line; put preparation into setup")
        if self.signal_margin_s is not None and not 0 < self.signal_margin_s <= 65535:
            problems.append(f"signal_margin_s={self.signal_margin_s} must be in 1..65535")
        if self.max_restarts < 0:
            problems.append(f"max_restarts={self.max_restarts} must be >= 0")
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
    if spec.signal_margin_s is not None:
        margin = int(spec.signal_margin_s)
        directives += ["--requeue", "--open-mode=append", f"--signal=B:USR2@{margin}"]
    directives.extend(spec.extra_directives)
    lines = ["#!/bin/bash", *(f"#SBATCH {d}" for d in directives), "set -eo pipefail"]
    lines.append(
        'echo "[oct] job ${SLURM_JOB_ID} on $(hostname) started $(date -Is)'
        ' (restart ${SLURM_RESTART_COUNT:-0})"'
    )
    if spec.signal_margin_s is None:
        lines += [*spec.setup, spec.command, *spec.finish]
        return "\n".join(lines) + "\n"
    lines += _traps(int(spec.signal_margin_s), int(spec.max_restarts), spec.finish, spec.srun_step)
    lines += [*spec.setup, f"{spec.command} &", "oct_step=$!", 'wait "$oct_step"', "oct_finish"]
    return "\n".join(lines) + "\n"


def _traps(margin: int, max_restarts: int, finish: Sequence[str], srun: bool) -> list[str]:
    """The batch shell's handlers: USR2 (time limit near) stops the step and requeues the job,
    TERM (Slurm ends or requeues the job) stops the step; `oct_finish` runs `finish`."""
    restarts = "${SLURM_RESTART_COUNT:-0}"
    # scancel without --full signals every step but the batch one: srun's tasks, not srun.
    stop = 'scancel --signal=TERM "$SLURM_JOB_ID"' if srun else 'kill -TERM "$oct_step"'
    return [
        "oct_step=",
        "oct_finish() {",
        *(f"  {line}" for line in finish or [":"]),
        "}",
        "oct_stop_step() {  # TERM to the step (torchrun passes it on), then wait for it",
        '  oct_rc=0; [ -n "$oct_step" ] || return 0',
        f"  {stop} 2>/dev/null || true",
        '  wait "$oct_step" || oct_rc=$?',
        "}",
        "oct_on_usr2() {",
        "  trap '' USR2 TERM",
        f'  echo "[oct] $(date -Is) SIGUSR2: time limit in {margin} s or less; checkpointing"',
        "  oct_stop_step",
        '  if [ -n "$oct_step" ] && [ "$oct_rc" -eq 0 ]; then oct_finish; exit 0; fi',
        f'  if [ "{restarts}" -ge {max_restarts} ]; then',
        f'    echo "[oct] not requeueing: started again {restarts} times,'
        f' slurm.max_restarts={max_restarts}"',
        "    exit 1",
        "  fi",
        f'  echo "[oct] requeueing job $SLURM_JOB_ID (restart $(({restarts} + 1)))"',
        '  scontrol requeue "$SLURM_JOB_ID" && exit 0',
        '  echo "[oct] scontrol requeue failed: the checkpoint stays for resubmit_failed: true"',
        "  exit 1",
        "}",
        "oct_on_term() {",
        "  trap '' TERM USR2",
        '  echo "[oct] $(date -Is) SIGTERM: stopping the step (it checkpoints)"',
        "  oct_stop_step",
        "  exit 143",
        "}",
        "trap oct_on_usr2 USR2",
        "trap oct_on_term TERM",
    ]
