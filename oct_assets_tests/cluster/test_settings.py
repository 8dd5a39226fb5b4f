"""The Slurm settings: declared once, checked when built, and the Dagster config made from them."""

import dataclasses

import pytest

from oct_assets.assets.cluster_config import ClusterModelConfig
from oct_assets.assets.cluster_config import SlurmSettings as SlurmSettingsConfig
from oct_assets.cluster.batch_script import SlurmJobSpec
from oct_assets.cluster.settings import SbatchOptions, SlurmSettings


def test_every_bad_setting_is_named_as_the_user_writes_it() -> None:
    with pytest.raises(ValueError, match="invalid Slurm settings") as info:
        SlurmSettings.from_dict(
            {"time": "soon", "mem": "lots", "partition": "two words", "nodes": 0}
        )
    text = str(info.value)
    for name in ("slurm.time='soon'", "slurm.mem='lots'", "slurm.partition=", "slurm.nodes=0"):
        assert name in text
    assert "cpus_per_task" not in text
    with pytest.raises(ValueError, match=r"slurm\.poll_interval_s=0"):
        SlurmSettings(poll_interval_s=0)
    with pytest.raises(ValueError, match=r"unknown Slurm setting.*: tme"):
        SlurmSettings.from_dict({"tme": "01:00:00"})


def test_the_dagster_config_is_generated_from_the_declaration() -> None:
    declared = {f.name: f.default for f in dataclasses.fields(SlurmSettings)}
    generated = SlurmSettingsConfig().model_dump()
    assert list(generated) == list(declared)
    assert generated == {k: list(v) if isinstance(v, tuple) else v for k, v in declared.items()}
    # The defaults users rely on: a training job asks for 4 CPUs and 8G unless told otherwise.
    assert (generated["cpus_per_task"], generated["mem"]) == (4, "8G")
    described = SlurmSettingsConfig.model_fields["time"].description
    assert described == SlurmSettings.__dataclass_fields__["time"].metadata["doc"]
    assert ClusterModelConfig.model_fields["slurm"].annotation is SlurmSettingsConfig
    assert SlurmSettings.from_dict(generated) == SlurmSettings()


def test_a_job_spec_takes_the_same_sbatch_fields_with_sbatch_defaults() -> None:
    options = {f.name for f in dataclasses.fields(SbatchOptions)}
    assert options <= {f.name for f in dataclasses.fields(SlurmJobSpec)}
    assert options <= {f.name for f in dataclasses.fields(SlurmSettings)}
    spec = SlurmJobSpec(name="j", command="true", workdir="/w", **SlurmSettings().sbatch_options())
    assert (spec.cpus_per_task, spec.mem) == (4, "8G")
    bare = SlurmJobSpec(name="j", command="true", workdir="/w")
    assert (bare.cpus_per_task, bare.mem) == (1, None)  # what sbatch asks for when told nothing
    assert SlurmSettings(nodes=2, ntasks_per_node=3).world_size == 6
    assert SlurmSettings(nodes=2, gpus_per_node=4).world_size == 8
