"""The cluster folder's layout and the training job composed from it, without a cluster."""

from oct_assets.cluster.batch_script import render_batch_script
from oct_assets.cluster.layout import LATEST_MODEL, RemoteLayout
from oct_assets.cluster.settings import SlurmSettings
from oct_assets.cluster.training import job_spec


def test_every_remote_folder_is_under_the_root() -> None:
    layout = RemoteLayout("/scratch/u/oct")
    assert layout.model("abc") == "/scratch/u/oct/models/abc"
    assert layout.job("abc") == "/scratch/u/oct/jobs/abc"
    assert layout.sample("s1") == "/scratch/u/oct/samples/s1"
    assert layout.cache == "/scratch/u/oct/cache"
    assert layout.checkpoints("abc") == "/scratch/u/oct/checkpoints/abc"
    assert layout.code("0123") == "/scratch/u/oct/code/0123"
    assert LATEST_MODEL == "models/latest"


def test_the_training_job_of_a_salt() -> None:
    layout = RemoteLayout("/r")
    slurm = SlurmSettings(python="/opt/py", setup=("module load x",), partition="cpu")
    spec = job_spec(
        "abc", slurm, layout, sample="/r/samples/s", code="/r/code/c", config="/r/jobs/abc/t.json"
    )
    assert (spec.name, spec.workdir, spec.partition, spec.cpus_per_task) == (
        "oct-train-abc",
        "/r/jobs/abc",
        "cpu",
        4,
    )
    assert spec.command == (
        "/opt/py -m oct_assets.ml.train --sample /r/samples/s --out /r/models/abc.partial-"
        "$SLURM_JOB_ID --config /r/jobs/abc/t.json --cache-dir /r/cache"
        " --checkpoint-dir /r/checkpoints/abc"
    )
    assert list(spec.finish) == [
        "mv -T /r/models/abc.partial-$SLURM_JOB_ID /r/models/abc",
        "rm -rf -- /r/checkpoints/abc",
    ]
    assert (spec.signal_margin_s, spec.max_restarts) == (120, 3)
    assert list(spec.setup) == [
        "module load x",
        "export PYTHONPATH=/r/code/c${PYTHONPATH:+:$PYTHONPATH}",
        "mkdir -p /r/models/abc.partial-$SLURM_JOB_ID",
    ]
    lines = render_batch_script(spec).splitlines()
    assert "#SBATCH --mem=8G" in lines and "#SBATCH --partition=cpu" in lines
    for directive in ("--requeue", "--open-mode=append", "--signal=B:USR2@120"):
        assert f"#SBATCH {directive}" in lines
