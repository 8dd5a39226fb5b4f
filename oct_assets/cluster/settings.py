"""The Slurm settings a user may pass, declared once: what `sbatch` is asked for, and how the
training job runs. They validate themselves when built, so a typo fails before anything is
staged or submitted; the Dagster config of `cluster_model` is generated from `SlurmSettings`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from oct_assets.cluster.launch import procs_per_node
from oct_assets.contracts.settings import field_range, setting

NO_SPACE = re.compile(r"^\S+$")
_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
_MEM = re.compile(r"^\d+[KMGT]?$")
_URL = re.compile(r"^(https?|file)://[^\s/]*/?\S*$")
ENVIRONMENTS = ("managed", "none")


@dataclass(frozen=True, kw_only=True)
class SbatchOptions:
    """The allocation and where it runs: one field per sbatch option, with sbatch's defaults."""

    # Prefix of a field's name in error messages (where a user writes the setting).
    FIELD_PREFIX: ClassVar[str] = ""
    WHAT: ClassVar[str] = "Slurm options"

    partition: str | None = setting(None, "sbatch --partition")
    account: str | None = setting(None, "sbatch --account")
    qos: str | None = setting(None, "sbatch --qos")
    constraint: str | None = setting(None, "sbatch --constraint")
    time: str = setting("01:00:00", "sbatch --time (D-HH:MM:SS, HH:MM:SS, MM:SS or MM)")
    nodes: int = setting(1, "sbatch --nodes", low=1)
    ntasks_per_node: int = setting(
        1, "sbatch --ntasks-per-node: training processes per node", low=1
    )
    gpus_per_node: int = setting(0, "sbatch --gpus-per-node; one training process per GPU", low=0)
    cpus_per_task: int = setting(1, "sbatch --cpus-per-task", low=1)
    mem: str | None = setting(None, "sbatch --mem (per node), e.g. 4G or 500M")
    gres: str | None = setting(None, "sbatch --gres (e.g. gpu:a100:4) instead of gpus_per_node")
    extra_directives: tuple[str, ...] = setting((), "further #SBATCH options, e.g. --exclusive")

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError(f"invalid {self.WHAT}: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """Every invalid field, named as the user writes it; empty when all are valid."""
        p = self.FIELD_PREFIX
        problems = []
        for label in ("partition", "account", "qos", "gres"):
            value = getattr(self, label)
            if value is not None and not NO_SPACE.match(value):
                problems.append(f"{p}{label}={value!r} must be non-empty without whitespace")
        if self.constraint is not None and ("\n" in self.constraint or not self.constraint):
            problems.append(f"{p}constraint={self.constraint!r} must be one non-empty line")
        if not _TIME.match(self.time):
            problems.append(f"{p}time={self.time!r} is not a Slurm time (D-HH:MM:SS, HH:MM:SS, MM)")
        if self.mem is not None and not _MEM.match(self.mem):
            problems.append(f"{p}mem={self.mem!r} is not a Slurm size such as 4G or 500M")
        problems += self._out_of_range()
        if self.gpus_per_node and self.gres:
            problems.append(f"set {p}gpus_per_node or {p}gres, not both")
        for directive in self.extra_directives:
            if not directive.startswith("--") or "\n" in directive:
                problems.append(f"extra directive {directive!r} must be one `--option=value`")
        return problems

    def _out_of_range(self) -> list[str]:
        problems = []
        for f in fields(self):
            bounds, value = field_range(f), getattr(self, f.name)
            if bounds is not None and value < bounds[0]:
                problems.append(f"{self.FIELD_PREFIX}{f.name}={value} must be >= {bounds[0]}")
            elif bounds is not None and bounds[1] is not None and value > bounds[1]:
                problems.append(f"{self.FIELD_PREFIX}{f.name}={value} must be <= {bounds[1]}")
        return problems

    @property
    def time_limit_s(self) -> int:
        """`time` in seconds (Slurm reads "M", "M:S", "H:M:S", "D-H", "D-H:M", "D-H:M:S")."""
        days, dash, clock = self.time.rpartition("-")
        parts = [int(p) for p in clock.split(":")]
        if dash:  # after a day count the first part is hours
            parts = [*parts, 0, 0][:3]
            return int(days) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]
        scale = {1: [60], 2: [60, 1], 3: [3600, 60, 1]}[len(parts)]
        return sum(p * k for p, k in zip(parts, scale, strict=True))

    def sbatch_options(self) -> dict[str, Any]:
        """The sbatch fields alone, for a `SlurmJobSpec`."""
        return {f.name: getattr(self, f.name) for f in fields(SbatchOptions)}


@dataclass(frozen=True, kw_only=True)
class SlurmSettings(SbatchOptions):
    """The `slurm` block of `cluster_model`: the job's allocation, where it runs and how it is
    followed. Only the world size (nodes x processes per node) changes the trained weights, so
    only it goes into the salt.

    A training job asks for 4 CPUs and 8G per node unless told otherwise (sbatch alone would
    ask for one CPU and no memory); users rely on these defaults. It is requeueable:
    `signal_margin_s` before its time limit it checkpoints and requeues itself, and Slurm may
    requeue it (preemption, a lost node); `max_restarts` bounds how often it is started again.
    """

    FIELD_PREFIX: ClassVar[str] = "slurm."
    WHAT: ClassVar[str] = "Slurm settings"

    cpus_per_task: int = setting(4, "sbatch --cpus-per-task", low=1)
    mem: str | None = setting("8G", "sbatch --mem (per node), e.g. 4G or 500M")
    python: str | None = setting(
        None,
        "the node's own python with torch, numpy and pillow (module, conda, container); set, it"
        " is used as is and no managed environment is built",
    )
    environment: str = setting(
        "managed",
        '"managed": build once, check and use the pinned venv under envs/<hash>/; "none": run'
        " python3 after the setup lines",
        choices=ENVIRONMENTS,
    )
    base_python: str = setting(
        "python3", "interpreter on the login node (after setup) that creates the managed venv"
    )
    torch_index_url: str | None = setting(
        None,
        "extra package index for torch, e.g. https://download.pytorch.org/whl/cpu or .../cu126;"
        " none: the installer's default index",
    )
    offline_wheels: bool = setting(
        False, "download the wheels here and stage them, for clusters that reach no index"
    )
    environment_timeout_s: float = setting(
        3600.0, "longest a managed environment build, or the wait for another run's, may take"
    )
    setup: tuple[str, ...] = setting(
        (), "shell lines before training, e.g. 'source ~/venvs/oct/bin/activate'"
    )
    signal_margin_s: int = setting(
        120,
        "seconds before the time limit at which the job checkpoints and requeues itself",
        low=1,
        high=65535,
    )
    max_restarts: int = setting(
        3,
        "times a job may be started again (requeue, preemption) before it counts as failed",
        low=0,
    )
    poll_interval_s: float = setting(5.0, "seconds between squeue polls (> 0)")
    timeout_s: float | None = setting(
        None, "give up (and scancel) after this many seconds (> 0); none waits forever"
    )

    def problems(self) -> list[str]:
        problems, p = super().problems(), self.FIELD_PREFIX
        if not self.poll_interval_s > 0:
            problems.append(f"{p}poll_interval_s={self.poll_interval_s} must be > 0")
        if self.timeout_s is not None and not self.timeout_s > 0:
            problems.append(f"{p}timeout_s={self.timeout_s} must be > 0")
        if _TIME.match(self.time) and self.signal_margin_s >= self.time_limit_s:
            problems.append(
                f"{p}signal_margin_s={self.signal_margin_s} must be less than {p}time={self.time!r}"
                f" ({self.time_limit_s} s): the job would be told to stop as it starts"
            )
        return problems + self._environment_problems()

    def _environment_problems(self) -> list[str]:
        p, problems = self.FIELD_PREFIX, []
        if self.environment not in ENVIRONMENTS:
            problems.append(f"{p}environment={self.environment!r} must be one of {ENVIRONMENTS}")
        for label in ("python", "base_python"):
            if getattr(self, label) == "":
                problems.append(f"{p}{label} must not be empty")
        url = self.torch_index_url
        if url is not None and not _URL.match(url):
            problems.append(f"{p}torch_index_url={url!r} must be an http(s):// or file:// URL")
        elif url is not None and "@" in url.split("/")[2]:  # the URL is not echoed: a secret
            problems.append(f"{p}torch_index_url must not hold credentials (use netrc/keyring)")
        if not self.environment_timeout_s > 0:
            problems.append(f"{p}environment_timeout_s={self.environment_timeout_s} must be > 0")
        return problems

    @property
    def world_size(self) -> int:
        return self.nodes * procs_per_node(self.ntasks_per_node, self.gpus_per_node)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SlurmSettings:
        """Build from run config (lists for the tuple fields); unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown Slurm setting(s): {', '.join(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**values)
