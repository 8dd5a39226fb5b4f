"""The training environment, provisioned on the cluster: a venv with the project's pinned node
requirements (`node-requirements.txt`), no Dagster.

It lives under `envs/<hash>/`, the hash covering the requirement set, the torch index and the
base Python (path, version, implementation, machine), so a change of any of them builds a new
environment beside the old one and jobs that still use the old one keep it. It is built once, on
the login node over SSH (`env_scripts.BUILD`: an flock against concurrent builders, a temporary
sibling published by rename, checked before it is published) and checked again (imports and
versions) before each job uses it; every later job reuses it without running an installer.
With `offline_wheels` the wheels are downloaded here (`env_wheels.py`: `pip download` for the
cluster's Python and platform), staged like the sample (`staging.py`) and installed with
`--no-index`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shlex
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from oct_assets.cluster import env_scripts, staging
from oct_assets.cluster.env_scripts import RemotePython
from oct_assets.cluster.env_wheels import download_wheels
from oct_assets.cluster.errors import ClusterError
from oct_assets.cluster.layout import RemoteLayout
from oct_assets.cluster.settings import SlurmSettings
from oct_assets.cluster.ssh import SSHSession
from oct_assets.cluster.types import CommandResult
from oct_assets.contracts.model_info import TRAINING_ENV_HASH_VAR

logger = logging.getLogger(__name__)

REQUIREMENTS_FILE = Path(__file__).with_name("node-requirements.txt")
# Bump when the way an environment is built changes, so every hash moves and envs are rebuilt.
ENV_FORMAT = 1
MARKER = ".oct-env.json"
HASH_VAR = TRAINING_ENV_HASH_VAR  # the trainer records it in model.json (ModelInfo.environment)
DEFAULT_PYTHON = "python3"
# What the trainer imports, by distribution name; the check imports those that are pinned.
TRAINER_IMPORTS = {"torch": "torch", "numpy": "numpy", "pillow": "PIL"}
_PIN = re.compile(r"^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)==([0-9][0-9A-Za-z.!+_-]*)$")


class TrainingEnvironmentError(ClusterError):
    """The managed environment could not be built, or a built one fails its check."""


@dataclass(frozen=True, order=True)
class Requirement:
    """One exact pin, its name normalised (PEP 503) so that spellings hash alike."""

    name: str
    version: str

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"


def parse_requirements(text: str, source: str) -> tuple[Requirement, ...]:
    """The pins of a requirement file: `name==version` per line, `#` comments; anything else
    (ranges, URLs, options) is refused naming `source` and the line, since the hash must say
    exactly what is installed."""
    pins: dict[str, Requirement] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PIN.match(line.replace(" ", ""))
        if not match:
            raise ValueError(f"{source}:{number}: {raw.strip()!r} is not an exact name==version")
        name = re.sub(r"[-_.]+", "-", match[1]).lower()
        if name in pins:
            raise ValueError(f"{source}:{number}: {name} is pinned twice")
        pins[name] = Requirement(name, match[2])
    if not pins:
        raise ValueError(f"{source}: no requirement in it")
    return tuple(sorted(pins.values()))


@dataclass(frozen=True)
class EnvironmentSpec:
    """What to install: the pins, the extra index for torch, offline or not, and the modules
    the check imports."""

    requirements: tuple[Requirement, ...]
    index_url: str | None = None
    offline: bool = False
    imports: tuple[str, ...] = ()

    @classmethod
    def shipped(cls, index_url: str | None = None, offline: bool = False) -> EnvironmentSpec:
        """The project's node requirements (`node-requirements.txt`)."""
        pins = parse_requirements(REQUIREMENTS_FILE.read_text(), str(REQUIREMENTS_FILE))
        imports = tuple(TRAINER_IMPORTS[r.name] for r in pins if r.name in TRAINER_IMPORTS)
        return cls(pins, index_url, offline, imports)


def env_hash(spec: EnvironmentSpec, python: RemotePython) -> str:
    """The environment's name: what it installs, from where, into which Python. Offline or not
    is left out (the same pins give the same packages), and so are the checked imports."""
    key = {
        "format": ENV_FORMAT,
        "requirements": [r.pin for r in sorted(spec.requirements)],
        "index_url": spec.index_url or "",
        "python": [python.executable, python.version, python.implementation, python.machine],
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TrainingEnvironment:
    """A checked environment on the cluster: its hash and folder, whether this call built it,
    and what it holds (`facts`: python, torch, cuda, packages, installer)."""

    hash: str
    path: str
    built: bool
    seconds: float
    facts: dict = field(default_factory=dict)

    @property
    def python(self) -> str:
        return f"{self.path}/bin/python"

    def metadata(self) -> dict:
        facts = self.facts
        keep = ("python", "torch", "cuda", "installer")
        return {"managed": True, "hash": self.hash, "path": self.path, "built": self.built} | {
            k: facts[k] for k in keep if k in facts
        }


def _script(setup: Sequence[str], body: str, args: Sequence[str]) -> str:
    """`bash -c` of the user's setup lines then `body`, every value a quoted argument."""
    text = "\n".join([*setup, body])
    return "bash -c " + shlex.join([text, "oct-env", *args])


def probe(session: SSHSession, base_python: str, setup: Sequence[str] = ()) -> RemotePython:
    """The base Python's facts, run after the setup lines (a `module load python` counts)."""
    body = '"$1" -c "$2"'
    result = session.run(_script(setup, body, [base_python, env_scripts.PROBE]))
    lines = result.stdout.strip().splitlines()
    try:
        facts = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise TrainingEnvironmentError(
            f"base python {base_python!r} on {session.settings.host} did not run (exit"
            f" {result.exit_code}): {result.stderr.strip()[-1000:]}; set slurm.base_python"
            " (or slurm.python for an environment of your own)"
        ) from None
    return RemotePython(**facts)


def ensure_environment(
    session: SSHSession,
    layout: RemoteLayout,
    spec: EnvironmentSpec,
    *,
    base_python: str = DEFAULT_PYTHON,
    setup: Sequence[str] = (),
    timeout_s: float = 3600.0,
    log: Callable[[str], None] = logger.info,
) -> TrainingEnvironment:
    """The environment of `spec` on the cluster, built unless it is there, checked either way.

    Safe to call from several runs at once: one builds, the others wait on its lock and reuse.
    """
    started = time.monotonic()
    python = probe(session, base_python, setup)
    digest = env_hash(spec, python)
    path = layout.env(digest)
    if session.exists(f"{path}/{MARKER}"):
        facts = _check(session, path, spec, setup)
        log(f"reusing training environment {path} ({_summary(facts)}); no installer runs")
        return TrainingEnvironment(digest, path, False, time.monotonic() - started, facts)
    wheels = _stage_wheels(session, spec, python, path, log) if spec.offline else ""
    log(
        f"building training environment {path} from {base_python} (Python {python.version}):"
        f" {' '.join(r.pin for r in spec.requirements)}"
        + (f" (extra index {spec.index_url})" if spec.index_url else "")
        + (" from staged wheels, no index" if wheels else "")
    )
    args = [path, base_python, str(int(timeout_s)), spec.index_url or "", wheels]
    args += [",".join(spec.imports), env_scripts.CHECK, *(r.pin for r in spec.requirements)]
    result = session.retrying(f"build of {path}", lambda: _build(session, setup, args, timeout_s))
    if not result.ok:
        raise TrainingEnvironmentError(_failure(path, spec, result.stderr))
    built = env_scripts.BUILT in result.stdout.split()
    facts = _check(session, path, spec, setup)
    seconds = time.monotonic() - started
    if built:
        log(f"built training environment {path} in {seconds:.1f}s ({_summary(facts)})")
    else:
        log(f"reusing training environment {path}, built by another run meanwhile")
    return TrainingEnvironment(digest, path, built, seconds, facts)


def _build(
    session: SSHSession, setup: Sequence[str], args: list[str], timeout_s: float
) -> CommandResult:
    """One attempt of the build; a lost connection (no exit status) is retried by the caller:
    the build goes on on the cluster, so the next attempt waits on its lock and reuses it."""
    result = session.run(_script(setup, env_scripts.BUILD, args), timeout=2 * timeout_s + 60)
    if result.exit_code == -1:
        raise ConnectionError(f"the connection to {session.settings.host} dropped mid-build")
    return result


def _check(session: SSHSession, path: str, spec: EnvironmentSpec, setup: Sequence[str]) -> dict:
    """The check (`env_scripts.CHECK`) of a published environment, after the setup lines."""
    body = 'PYTHONNOUSERSITE=1 "$1/bin/python" -c "$2" check "" "$1" "" "$3" "${@:4}"'
    args = [path, env_scripts.CHECK, ",".join(spec.imports), *(r.pin for r in spec.requirements)]
    result = session.run(_script(setup, body, args))
    if not result.ok:
        raise TrainingEnvironmentError(
            f"training environment {path} fails its check: {result.stderr.strip()[-1500:]};"
            " remove the folder to have it rebuilt"
        )
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    marker = json.loads(session.read_tail(f"{path}/{MARKER}"))
    return {**facts, "installer": marker.get("installer")}


def _failure(path: str, spec: EnvironmentSpec, stderr: str) -> str:
    """The error of a failed build: what failed, the installer's last lines, the pins."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if env_scripts.FAILED in line), 0)
    detail = "\n".join(lines[start:][-30:]).replace(env_scripts.FAILED + " ", "")
    named = sorted(r.pin for r in spec.requirements if r.name in stderr.lower() or r.pin in stderr)
    return (
        f"could not build training environment {path} (nothing was published):\n{detail}\n"
        f"requirements: {', '.join(r.pin for r in spec.requirements)}"
        + (f"; named in the error: {', '.join(named)}" if named else "")
    )


def _summary(facts: dict) -> str:
    cuda = facts.get("cuda") or "none"
    return f"python {facts.get('python')}, torch {facts.get('torch', '-')}, cuda {cuda}"


def _stage_wheels(
    session: SSHSession,
    spec: EnvironmentSpec,
    python: RemotePython,
    env_path: str,
    log: Callable[[str], None],
) -> str:
    """The wheels downloaded here and staged (verified, published by marker) beside the env."""
    remote = f"{env_path}.wheels"
    with tempfile.TemporaryDirectory(prefix="oct-wheels-") as tmp:
        download_wheels([r.pin for r in spec.requirements], spec.index_url, python, Path(tmp))
        staged = staging.stage_folder(session, Path(tmp), remote, key=Path(env_path).name)
    log(
        f"wheels for the offline build at {remote}: {staged.files} files,"
        f" {staged.sent_bytes / 1e6:.1f} MB sent, sha256-verified"
    )
    return remote


def for_job(
    session: SSHSession,
    layout: RemoteLayout,
    slurm: SlurmSettings,
    *,
    log: Callable[[str], None],
) -> tuple[SlurmSettings, TrainingEnvironment | None]:
    """The settings a training job runs with, and the environment it runs in.

    An explicit `slurm.python` wins (a module, conda env or container of the site's own): it is
    used as is and nothing is built; so does `environment: none` (then `python3` after the setup
    lines). Otherwise the managed environment is ensured and the job runs its python, with the
    environment's hash exported for the trainer to record in model.json.
    """
    if slurm.python is not None or slurm.environment == "none":
        return replace(slurm, python=slurm.python or DEFAULT_PYTHON), None
    spec = EnvironmentSpec.shipped(slurm.torch_index_url, slurm.offline_wheels)
    env = ensure_environment(
        session,
        layout,
        spec,
        base_python=slurm.base_python,
        setup=slurm.setup,
        timeout_s=slurm.environment_timeout_s,
        log=log,
    )
    exports = [f"export {HASH_VAR}={env.hash}", "export PYTHONNOUSERSITE=1"]
    return replace(slurm, python=env.python, setup=(*slurm.setup, *exports)), env
