"""What a finished Slurm job used: from `sacct` where the cluster keeps accounting, else from
`scontrol show job` (which knows no CPU time or memory peak); the result says which.

A requeued job has one accounting record per run (`sacct --duplicates`): its usage adds up every
run, and `restarts` says how many came after the first. GPU utilisation and memory come from
the steps' `TRESUsageInAve`/`TRESUsageInMax` (`gres/gpuutil`, `gres/gpumem`) where the cluster
gathers them (`AcctGatherGpuType`/NVML); elsewhere they are null.
"""

from __future__ import annotations

import re
import time

from oct_assets.cluster.slurm import RemoteShell

SACCT_FIELDS = (
    "JobID,State,ExitCode,ElapsedRaw,TotalCPU,MaxRSS,NNodes,AllocCPUS,AllocTRES,"
    "TRESUsageInAve,TRESUsageInMax"
)
# States after which a job's (or step's) accounting record still changes.
_UNSETTLED = {"PENDING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED", "COMPLETING"}
_SIZE = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}
# A run that Slurm started again: its record is closed with one of these.
_RERUN = {"REQUEUED", "PREEMPTED", "NODE_FAIL"}


def job_usage(shell: RemoteShell, job_id: int, *, settle_s: float = 15.0) -> dict:
    """Elapsed time, CPU efficiency, peak memory, node- and GPU-hours, state and exit code.

    Call it once the job has ended. slurmctld hands the final record to slurmdbd
    asynchronously, so `sacct` may still say RUNNING (and no CPU time) for a moment after
    `scontrol` says COMPLETED: it is asked again for up to `settle_s` seconds.
    """
    deadline = time.monotonic() + settle_s
    while True:
        result = shell.run(f"sacct -n -P -D -j {int(job_id)} -o {SACCT_FIELDS}")
        rows = [line.split("|") for line in result.stdout.splitlines() if line.strip()]
        if not (result.ok and rows):
            break
        usage = _from_sacct(job_id, rows)
        if usage["settled"] or time.monotonic() >= deadline:
            if not usage.pop("settled"):
                usage["why"] = f"sacct: record not final after {settle_s:g}s"
            return usage
        time.sleep(0.5)
    shown = shell.run(f"scontrol show job -o {int(job_id)}")
    if not shown.ok:
        return {"source": "none", "why": (result.stderr or shown.stderr).strip()[:300]}
    usage = _from_scontrol(shown.stdout)
    usage["why"] = "sacct: " + (result.stderr.strip()[:200] or "no accounting records")
    return usage


def _seconds(text: str) -> float:
    """Slurm's [D-]HH:MM:SS[.fff] or MM:SS.fff as seconds."""
    days, _, clock = text.rpartition("-")
    parts = [float(p) for p in clock.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0.0)
    return (int(days) if days else 0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


def _bytes(text: str) -> int | None:
    match = re.fullmatch(r"([\d.]+)([KMGTP]?)", text.strip())
    return int(float(match.group(1)) * _SIZE[match.group(2)]) if match else None


def _tres(text: str, name: str) -> str | None:
    """The value of `name` in a TRES list such as `cpu=00:01:02,gres/gpumem=1.5G,mem=1200M`."""
    for item in text.split(","):
        key, _, value = item.partition("=")
        if key == name:
            return value
    return None


def _gpu_usage(records: list[dict[str, str]]) -> dict[str, float | int | None]:
    """GPU utilisation (%) and memory peak over the steps, None where sacct has none."""

    def figures(field: str, name: str, parse) -> list:
        found = [_tres(r.get(field) or "", name) for r in records]
        return [v for text in found if text is not None and (v := parse(text)) is not None]

    def percent(text: str) -> float | None:
        return float(text) if re.fullmatch(r"[\d.]+", text) else None

    util_ave = figures("TRESUsageInAve", "gres/gpuutil", percent)
    util_max = figures("TRESUsageInMax", "gres/gpuutil", percent)
    mem_max = figures("TRESUsageInMax", "gres/gpumem", _bytes)
    return {  # the training step is the busiest: its figures are the largest
        "gpu_util_avg_percent": max(util_ave) if util_ave else None,
        "gpu_util_max_percent": max(util_max) if util_max else None,
        "gpu_mem_peak_bytes": max(mem_max) if mem_max else None,
    }


def _gpus(tres: str) -> int:
    match = re.search(r"gres/gpu(?::[^=,]+)?=(\d+)", tres)
    return int(match.group(1)) if match else 0


def _exit(text: str) -> int | None:
    return int(text.split(":")[0]) if re.fullmatch(r"\d+:\d+", text) else None


def _summary(source: str, state: str, exit_code, elapsed: float, nodes: int, gpus: int) -> dict:
    return {
        "source": source,
        "state": state,
        "exit_code": exit_code,
        "elapsed_s": round(elapsed, 1),
        "nodes": nodes,
        "node_hours": round(nodes * elapsed / 3600, 4),
        "gpus": gpus,
        "gpu_hours": round(gpus * elapsed / 3600, 4),
    }


def _from_sacct(job_id: int, rows: list[list[str]]) -> dict:
    fields = SACCT_FIELDS.split(",")
    records = [dict(zip(fields, row, strict=False)) for row in rows]
    runs = [r for r in records if r["JobID"] == str(job_id)] or records[:1]
    # The last run that was not started again is the outcome; every run's time counts.
    final = [r for r in runs if r["State"].split()[0] not in _RERUN]
    job = final[-1] if final else runs[-1]
    elapsed = sum(float(r["ElapsedRaw"] or 0) for r in runs)
    cpus = int(job["AllocCPUS"] or 0)
    usage = _summary(
        "sacct",
        job["State"].split()[0],
        _exit(job["ExitCode"]),
        elapsed,
        int(job["NNodes"] or 0),
        _gpus(job["AllocTRES"]),
    )
    cpu_s = sum(_seconds(r["TotalCPU"]) for r in runs if r["TotalCPU"]) or None
    peaks = [b for r in records if (b := _bytes(r.get("MaxRSS", ""))) is not None]
    usage["cpu_efficiency"] = (
        round(cpu_s / (elapsed * cpus), 4) if cpu_s and elapsed and cpus else None
    )
    # MaxRSS is a step figure (the job row has none): the largest of the steps.
    usage["peak_memory_bytes"] = max(peaks) if peaks else None
    usage["restarts"] = len(runs) - 1
    usage.update(_gpu_usage(records))
    current = [r for r in records if r not in runs[:-1]]  # earlier runs' records are closed
    usage["settled"] = not any(r["State"].split()[0] in _UNSETTLED for r in current if r["State"])
    return usage


def _from_scontrol(text: str) -> dict:
    fields = dict(re.findall(r"(\w+)=(\S*)", text))
    usage = _summary(
        "scontrol",
        fields.get("JobState", "UNKNOWN"),
        _exit(fields.get("ExitCode", "")),
        _seconds(fields.get("RunTime", "0:0:0")),
        int(fields.get("NumNodes", "0").split("-")[0] or 0),
        _gpus(fields.get("AllocTRES", "") or fields.get("TRES", "")),
    )
    usage["cpu_efficiency"] = None  # scontrol knows no CPU time
    usage["peak_memory_bytes"] = None  # nor a memory peak
    usage["restarts"] = int(fields["Restarts"]) if fields.get("Restarts", "").isdigit() else 0
    usage.update(_gpu_usage([]))  # nor GPU figures
    return usage
