"""What a job used, parsed from `sacct` answers of a cluster the tests do not have."""

from pathlib import Path

from oct_assets.cluster.accounting import job_usage
from oct_assets.cluster.types import CommandResult


class _Shell:
    """Answers sacct like a two-node GPU cluster (which the test cluster is not)."""

    def run(self, command: str, **kwargs) -> CommandResult:
        assert command.startswith("sacct ")
        out = (
            "77|COMPLETED|0:0|3600|01:30:00||2|16|billing=16,cpu=16,gres/gpu=4,mem=64G,node=2\n"
            "77.batch|COMPLETED|0:0|3600|00:01:00|1200M|1|8|cpu=8,mem=32G,node=1\n"
            "77.0|COMPLETED|0:0|3590|01:29:00|7.5G|2|16|cpu=16,gres/gpu=4,node=2\n"
        )
        return CommandResult(command, 0, out, "")


def test_usage_from_sacct() -> None:
    usage = job_usage(_Shell(), 77)
    assert usage["source"] == "sacct" and usage["state"] == "COMPLETED"
    assert usage["exit_code"] == 0 and usage["elapsed_s"] == 3600
    assert usage["node_hours"] == 2 and usage["gpu_hours"] == 4
    assert usage["cpu_efficiency"] == round(5400 / (3600 * 16), 4)
    assert usage["peak_memory_bytes"] == int(7.5 * 2**30)


class _SettlingShell:
    """sacct lags scontrol: the first answer still says RUNNING, with no CPU time yet."""

    def __init__(self) -> None:
        self.calls = 0

    def run(self, command: str, **kwargs) -> CommandResult:
        self.calls += 1
        state, cpu, rss = (
            ("RUNNING", "00:00:00", "") if self.calls == 1 else ("COMPLETED", "00:00:09", "5M")
        )
        out = f"8|{state}|0:0|10|{cpu}||1|1|cpu=1,node=1\n8.batch|{state}|0:0|10|{cpu}|{rss}|1|1|\n"
        return CommandResult(command, 0, out, "")


def test_usage_waits_for_the_final_sacct_record() -> None:
    shell = _SettlingShell()
    usage = job_usage(shell, 8)
    assert shell.calls == 2 and usage["state"] == "COMPLETED" and "why" not in usage
    assert usage["cpu_efficiency"] == 0.9 and usage["peak_memory_bytes"] == 5 * 2**20
    stuck = job_usage(_SettlingShell(), 8, settle_s=0)  # asked once: what sacct has, and why
    assert stuck["state"] == "RUNNING" and "not final" in stuck["why"]


class _RecordedShell:
    """Answers sacct with a recorded sample (`data/`), comment lines aside."""

    def __init__(self, name: str) -> None:
        text = (Path(__file__).parent / "data" / name).read_text()
        self.out = "".join(line + "\n" for line in text.splitlines() if not line.startswith("#"))

    def run(self, command: str, **kwargs) -> CommandResult:
        assert command.startswith("sacct ") and " -D " in command  # every run of the job
        return CommandResult(command, 0, self.out, "")


def test_gpu_figures_and_restarts_of_a_requeued_gpu_job() -> None:
    usage = job_usage(_RecordedShell("sacct_requeued_gpu.txt"), 4242)
    assert (usage["source"], usage["state"], usage["exit_code"]) == ("sacct", "COMPLETED", 0)
    assert usage["restarts"] == 1 and "why" not in usage
    assert usage["elapsed_s"] == 3600 + 5400  # both runs were allocated, and paid for
    assert usage["gpus"] == 8 and usage["gpu_hours"] == 8 * 9000 / 3600
    assert usage["cpu_efficiency"] == round((27611 + 40900) / (9000 * 32), 4)
    assert usage["peak_memory_bytes"] == int(11.5 * 2**30)  # the largest step MaxRSS
    # The training step's figures (the batch and extern steps report 0 or nothing).
    assert usage["gpu_util_avg_percent"] == 91.0 and usage["gpu_util_max_percent"] == 100.0
    assert usage["gpu_mem_peak_bytes"] == 31520 * 2**20


def test_gpu_figures_are_null_where_the_cluster_gathers_none() -> None:
    usage = job_usage(_Shell(), 77)
    assert usage["restarts"] == 0
    assert usage["gpu_util_avg_percent"] is None and usage["gpu_mem_peak_bytes"] is None
