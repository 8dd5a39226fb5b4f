"""Following a job that Slurm starts again (requeue, preemption), and what its restarts cost,
against recorded `squeue`/`scontrol` answers (the real requeue runs in
`integration/test_cluster_requeue.py`)."""

from __future__ import annotations

import pytest

from oct_assets.cluster import slurm as sl
from oct_assets.cluster.errors import SlurmJobFailedError, SlurmRestartLimitError
from oct_assets.cluster.restarts import restart_cost
from oct_assets.cluster.types import CommandResult, SlurmJob

JOB = SlurmJob(7, "oct-train-x", "/r/jobs/x/slurm-7.log", "/r/jobs/x/oct-train-x.sbatch")


class _Cluster:
    """Answers squeue/scontrol from a script of (squeue answer, log text appended) per poll;
    the log only grows (`--open-mode=append`)."""

    def __init__(self, polls: list[tuple[str, str]], final: str) -> None:
        self.polls, self.final, self.log, self.cancelled = list(polls), final, b"", False
        self.state = ""

    def run(self, command: str, **kwargs) -> CommandResult:
        if command.startswith("squeue"):
            if self.polls:
                self.state, appended = self.polls.pop(0)
                self.log += appended.encode()
            return CommandResult(command, 0, self.state + "   \n", "")
        if command.startswith("scontrol show job"):
            return CommandResult(command, 0, self.final, "")
        if command.startswith("scancel"):  # Slurm ends it: CANCELLED, then out of the queue
            restarts = self.state.rpartition("|")[2]
            self.polls, self.cancelled, self.state = [], True, ""
            self.final = f"JobId=7 JobState=CANCELLED ExitCode=0:15 Restarts={restarts}\n"
            return CommandResult(command, 0, "", "")
        raise AssertionError(command)

    def resolve(self, path: str) -> str:
        return path

    def read_tail(self, path: str, max_bytes: int = 8192) -> str:
        return self.log[-max_bytes:].decode()

    def read_from(self, path: str, offset: int, max_bytes: int = 1 << 20) -> tuple[bytes, int]:
        data = self.log[offset : offset + max_bytes]
        return data, offset + len(data)


RUN_1 = (
    "[oct] job 7 on n1 started 2026-12-03T10:00:00+00:00 (restart 0)\n"
    '2026-12-03 10:00:05,000 INFO epoch {"epoch": 1, "epochs": 4}\n'
    '2026-12-03 10:00:10,000 INFO epoch {"epoch": 2, "epochs": 4}\n'
)
STOP_1 = (
    "[oct] 2026-12-03T10:00:12+00:00 SIGTERM: stopping the step (it checkpoints)\n"
    "2026-12-03 10:00:12,500 WARNING stopped by SIGTERM in epoch 3 at step 2;"
    " resume from /r/checkpoints/x/checkpoint.pt\n"
)
RUN_2 = (
    "[oct] job 7 on n2 started 2026-12-03T10:00:40+00:00 (restart 1)\n"
    "2026-12-03 10:00:42,500 INFO resuming from /r/checkpoints/x/checkpoint.pt"
    " in epoch 3 at step 2\n"
    '2026-12-03 10:00:44,000 INFO epoch {"epoch": 3, "epochs": 4}\n'
    '2026-12-03 10:00:49,000 INFO epoch {"epoch": 4, "epochs": 4}\n'
)
DONE = "JobId=7 JobState=COMPLETED Reason=None ExitCode=0:0 Restarts=1 RunTime=00:00:12\n"


def follow(cluster: _Cluster, **kwargs) -> tuple[sl.SlurmJobStatus, list[str], list[int]]:
    lines: list[str] = []
    restarts: list[int] = []
    status = sl.wait(
        cluster,
        JOB,
        poll_interval_s=0.001,
        on_log_line=lines.append,
        on_restart=lambda s: restarts.append(s.restarts),
        **kwargs,
    )
    return status, lines, restarts


@pytest.mark.parametrize("between", ["REQUEUED|None|1", "PREEMPTED|None|1", "NODE_FAIL|None|1"])
def test_a_restarted_job_is_followed_to_its_end_under_one_id(between: str) -> None:
    """REQUEUED, PREEMPTED (then requeued) and PENDING after a requeue are not its end."""
    cluster = _Cluster(
        [
            ("RUNNING|None|0", RUN_1),
            ("RUNNING|None|0", STOP_1),
            (between, ""),
            ("PENDING|BeginTime|1", ""),
            ("RUNNING|None|1", RUN_2),
            ("COMPLETED|None|1", ""),
        ],
        DONE,
    )
    status, lines, restarts = follow(cluster, max_restarts=3)
    assert (status.state, status.exit_code, status.restarts) == ("COMPLETED", 0, 1)
    assert restarts == [1] and not cluster.cancelled
    assert lines == (RUN_1 + STOP_1 + RUN_2).splitlines()  # every line once, in order


def test_a_job_preempted_for_good_ends_after_the_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sl, "REQUEUE_GRACE_S", 0.05)
    cluster = _Cluster([("RUNNING|None|0", RUN_1)] + [("PREEMPTED|None|0", "")] * 10**4, DONE)
    with pytest.raises(SlurmJobFailedError, match="PREEMPTED"):
        follow(cluster)


def test_restarts_past_max_restarts_cancel_the_job_naming_the_setting() -> None:
    cluster = _Cluster(
        [("RUNNING|None|0", RUN_1), ("PENDING|BeginTime|1", ""), ("PENDING|BeginTime|2", "")],
        DONE,
    )
    with pytest.raises(SlurmRestartLimitError, match=r"slurm\.max_restarts=1") as info:
        follow(cluster, max_restarts=1)
    assert cluster.cancelled and info.value.status.restarts == 2
    assert info.value.status.state == "CANCELLED"  # cancelled for good, not pending again


def test_failing_after_the_last_allowed_restart_names_the_setting() -> None:
    failed = "JobId=7 JobState=FAILED Reason=NonZeroExitCode ExitCode=1:0 Restarts=2\n"
    cluster = _Cluster([("RUNNING|None|2", RUN_2), ("", "")], failed)
    with pytest.raises(SlurmRestartLimitError, match=r"slurm\.max_restarts=2.*not requeued"):
        follow(cluster, max_restarts=2)
    with pytest.raises(SlurmJobFailedError) as info:  # with restarts to spare: a plain failure
        follow(_Cluster([("RUNNING|None|2", RUN_2), ("", "")], failed), max_restarts=5)
    assert not isinstance(info.value, SlurmRestartLimitError)


def test_restart_cost_from_the_appended_log() -> None:
    cost = restart_cost((RUN_1 + STOP_1 + RUN_2).splitlines(), restarts=1)
    # The stop checkpointed mid-epoch 3 and the next run resumed right there: nothing redone;
    # lost: from that checkpoint (10:00:12.5) to the resume (10:00:42.5).
    assert cost.to_dict() == {
        "restarts": 1,
        "runs_in_log": 2,
        "epochs_redone": 0,
        "time_lost_s": 30.0,
    }


def test_restart_cost_of_a_run_killed_without_a_stop_checkpoint() -> None:
    """SIGKILLed after epoch 2 (its last checkpoint); the next run found no checkpoint."""
    fresh = RUN_2.replace(
        "2026-12-03 10:00:42,500 INFO resuming from /r/checkpoints/x/checkpoint.pt"
        " in epoch 3 at step 2\n",
        "",
    )
    cost = restart_cost((RUN_1 + fresh).splitlines(), restarts=1)
    assert cost.epochs_redone == 2  # it started again from epoch 1
    assert cost.time_lost_s == 30.0  # from the epoch-2 checkpoint (10:00:10) to 10:00:40
    assert restart_cost(RUN_1.splitlines(), restarts=0).to_dict()["time_lost_s"] == 0.0


def test_restart_cost_reads_the_lines_the_trainer_writes() -> None:
    """Lines made by the trainer's own log format and messages (`contracts.train_log`), so a
    rewording on either side fails here rather than zeroing the figures."""
    import logging
    from pathlib import Path

    from oct_assets.contracts.train_log import (
        LOG_FORMAT,
        epoch_line,
        resuming_line,
        stopped_line,
    )

    def logged(message: str, at: str, who: str = "rank 0 ") -> str:
        record = logging.LogRecord("t", logging.INFO, __file__, 1, message, None, None)
        record.asctime = at  # what the formatter would put, fixed here
        formatter = logging.Formatter(LOG_FORMAT.format(who=who))
        formatter.formatTime = lambda *_: at  # type: ignore[method-assign]
        return formatter.format(record)

    ckpt = Path("/r/checkpoints/x/checkpoint.pt")
    lines = [
        "[oct] job 7 on n1 started 2026-12-03T10:00:00+00:00 (restart 0)",
        logged(epoch_line({"epoch": 1, "train_loss": 1.0}), "2026-12-03 10:00:05,000"),
        logged(epoch_line({"epoch": 2, "train_loss": 0.9}), "2026-12-03 10:00:10,000"),
        logged(stopped_line("SIGTERM", 3, 4, ckpt), "2026-12-03 10:00:12,000"),
        "[oct] job 7 on n1 started 2026-12-03T10:00:30+00:00 (restart 1)",
        logged(resuming_line(ckpt, 3, 4), "2026-12-03 10:00:40,000", who=""),
        logged(epoch_line({"epoch": 3, "train_loss": 0.8}), "2026-12-03 10:00:44,000", who=""),
    ]
    cost = restart_cost(lines, restarts=1)
    assert (cost.runs_in_log, cost.epochs_redone, cost.time_lost_s) == (2, 0, 28.0)
