"""The managed environment's pure parts: requirement parsing, the hash, settings, the scripts."""

import dataclasses
import importlib.metadata as md
import subprocess

import pytest

from oct_assets.cluster import env_scripts
from oct_assets.cluster.env_scripts import RemotePython
from oct_assets.cluster.env_wheels import WheelDownloadError, wheel_platforms
from oct_assets.cluster.environment import (
    REQUIREMENTS_FILE,
    EnvironmentSpec,
    Requirement,
    env_hash,
    for_job,
    parse_requirements,
)
from oct_assets.cluster.layout import RemoteLayout
from oct_assets.cluster.settings import SlurmSettings

PY = RemotePython("/usr/bin/python3.11", "3.11.2", "CPython", "x86_64", "2.36")
PINS = (Requirement("numpy", "2.4.6"), Requirement("torch", "2.13.0"))


def test_pins_are_parsed_normalised_and_sorted() -> None:
    text = "# node\nTorch == 2.13.0  # cpu or cuda\n\nnumpy==2.4.6\nDagster_Pipes==1.13.27\n"
    assert parse_requirements(text, "reqs.txt") == (
        Requirement("dagster-pipes", "1.13.27"),
        Requirement("numpy", "2.4.6"),
        Requirement("torch", "2.13.0"),
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("torch>=2.0\n", "reqs.txt:1: 'torch>=2.0' is not an exact name==version"),
        ("numpy==2.4.6\n-e .\n", "reqs.txt:2: '-e .'"),
        ("torch @ https://x/torch.whl\n", "reqs.txt:1:"),
        ("numpy==2.4.6\nNumPy==2.4.6\n", "reqs.txt:2: numpy is pinned twice"),
        ("# nothing\n", "reqs.txt: no requirement in it"),
    ],
)
def test_anything_but_exact_pins_is_refused_naming_file_and_line(text: str, expected: str) -> None:
    with pytest.raises(ValueError, match="^" + expected.replace("(", r"\(").replace("+", r"\+")):
        parse_requirements(text, "reqs.txt")


def test_shipped_set_pins_what_the_project_venv_runs() -> None:
    """The node runs the versions the project is tested with (local labels such as +cpu aside)."""
    spec = EnvironmentSpec.shipped()
    pins = {r.name: r.version for r in spec.requirements}
    assert set(pins) == {"torch", "numpy", "pillow", "dagster-pipes"}
    for name, version in pins.items():
        assert md.version(name).split("+")[0] == version, name
    assert spec.imports == ("numpy", "PIL", "torch")  # what the trainer imports
    assert REQUIREMENTS_FILE.name == "node-requirements.txt"


def test_hash_is_stable_and_moves_with_pins_index_and_python() -> None:
    spec = EnvironmentSpec(PINS)
    digest = env_hash(spec, PY)
    assert digest == "3d4a4203ea295be5"  # a change here renames every env: bump ENV_FORMAT
    assert env_hash(EnvironmentSpec(tuple(reversed(PINS))), PY) == digest
    assert env_hash(dataclasses.replace(spec, offline=True, imports=("torch",)), PY) == digest
    moved = {
        env_hash(EnvironmentSpec((PINS[0], Requirement("torch", "2.14.1"))), PY),
        env_hash(dataclasses.replace(spec, index_url="https://download.pytorch.org/whl/cpu"), PY),
        env_hash(spec, dataclasses.replace(PY, version="3.12.1")),
        env_hash(spec, dataclasses.replace(PY, executable="/opt/python/3.11/bin/python3")),
        env_hash(spec, dataclasses.replace(PY, machine="aarch64")),
    }
    assert digest not in moved and len(moved) == 5


def test_wheel_platforms_follow_the_clusters_glibc() -> None:
    tags = wheel_platforms(dataclasses.replace(PY, libc="2.28"))
    assert tags[0] == "manylinux_2_28_x86_64" and "manylinux_2_17_x86_64" in tags
    assert tags[-2:] == ["manylinux2014_x86_64", "linux_x86_64"]
    assert "manylinux_2_29_x86_64" not in tags
    with pytest.raises(WheelDownloadError, match="needs a glibc Linux Python"):
        wheel_platforms(dataclasses.replace(PY, libc=""))


class NoSession:
    """Fails the test if anything reaches for the cluster."""

    def __getattr__(self, name: str):
        raise AssertionError(f"the cluster was used ({name}) though nothing is to be built")


def test_an_explicit_python_or_none_builds_nothing() -> None:
    layout = RemoteLayout("/r")
    mine = SlurmSettings(python="/opt/conda/bin/python", setup=("module load cuda",))
    job, env = for_job(NoSession(), layout, mine, log=print)  # type: ignore[arg-type]
    assert env is None and job == mine
    plain = SlurmSettings(environment="none")
    job, env = for_job(NoSession(), layout, plain, log=print)  # type: ignore[arg-type]
    assert env is None and job.python == "python3" and job.setup == ()


def test_environment_settings_are_checked_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"slurm.environment='conda' must be one of"):
        SlurmSettings(environment="conda")
    with pytest.raises(ValueError, match=r"slurm.torch_index_url='pypi' must be an http"):
        SlurmSettings(torch_index_url="pypi")
    with pytest.raises(ValueError, match=r"slurm\.environment_timeout_s=0"):
        SlurmSettings(environment_timeout_s=0)
    with pytest.raises(ValueError) as caught:
        SlurmSettings(torch_index_url="https://me:s3cret@pkgs.example.org/simple")
    assert "must not hold credentials" in str(caught.value) and "s3cret" not in str(caught.value)
    assert SlurmSettings().python is None and SlurmSettings().environment == "managed"


def test_the_remote_scripts_parse() -> None:
    """bash -n of the build, and the Python snippets compile."""
    subprocess.run(["bash", "-n", "-c", env_scripts.BUILD], check=True)
    compile(env_scripts.PROBE, "probe", "exec")
    compile(env_scripts.CHECK, "check", "exec")
