"""No step outlives its run, and a run whose process died is marked failed, not "started".

A step of the multiprocess executor (`dagster asset materialize`, the UI's and the daemon's run
workers) runs in a child of the run process: it asks the kernel to kill it when that process
dies, so a `kill -9` of the run leaves no step that publishes a folder or moves a pointer.

Nothing is left to record the failure then, so each run tags itself with its run process's
identity (host, pid, start time), and every later step on the host marks the `STARTED` runs
whose process is gone as failed.
"""

from __future__ import annotations

import multiprocessing
import os

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter

from oct_assets.contracts.lifetime import die_with_parent, is_gone, process_identity

RUN_PROCESS_TAG = "oct/run_process"


def bind_step_to_run(instance: DagsterInstance, run: DagsterRun) -> None:
    """Die with the run process; tag the run with its identity; fail the runs that died."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        die_with_parent(parent.pid)
    run_pid = parent.pid if parent is not None else os.getpid()
    if RUN_PROCESS_TAG not in run.tags:
        identity = process_identity(run_pid)
        if identity is not None:
            instance.add_run_tags(run.run_id, {RUN_PROCESS_TAG: identity})
    fail_dead_runs(instance, exclude=run.run_id)


def fail_dead_runs(instance: DagsterInstance, exclude: str | None = None) -> list[str]:
    """Mark as failed every started run of this host whose run process has ended; their ids."""
    failed = []
    for run in instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED])):
        identity = run.tags.get(RUN_PROCESS_TAG)
        if run.run_id == exclude or identity is None or not is_gone(identity):
            continue
        instance.report_run_failed(
            run, f"the run's process ({identity}) ended without finishing the run (killed?)"
        )
        failed.append(run.run_id)
    return failed
