"""Where jobs run: one small interface, `Backend`, over submitit's local, debug and Slurm
executors.

A backend submits a job (Slurm: also an array of jobs) of one `JobShape` after other jobs, says
which of its jobs are still queued or running, cancels jobs and waits for one. `local` and
`debug` run each job to its end before the next starts (one at a time: every job uses every
core; the scheduler submits an array's tasks as single jobs, in turn);
`slurm` queues them with `afterok` dependencies, sends USR2 `SIGNAL_DELAY_S` before the time
limit so that a job checkpoints and requeues (repro/jobs/training.py), and ends a job of several
tasks when one task fails.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from repro.targets.jobfiles import Resources

CLUSTERS = ("local", "slurm", "debug")
SIGNAL_DELAY_S = 120
MAX_TIMEOUTS = 50
"""Times a job may hit its time limit and requeue (assumed; submitit's default is 3, which would
stop a long training run after its fourth time limit although every attempt resumes from its
checkpoint). Preemptions do not count."""


class SlurmUnavailable(RuntimeError):
    pass


class Interrupted(KeyboardInterrupt):
    """Ctrl-C while a job ran here: the job was cancelled (`cancelled` jobs)."""

    def __init__(self, cancelled: int):
        super().__init__(cancelled)
        self.cancelled = cancelled


@dataclass(frozen=True)
class JobShape:
    """What one job asks the cluster for: a name, a log folder (submitit's `%j` pattern), the
    resources (nodes, tasks and GPUs per node, time limit) and how often it may requeue."""
    name: str
    folder: Path
    resources: Resources
    max_timeouts: int = MAX_TIMEOUTS


@dataclass
class Job:
    """A submitted job: its id and log files (and, until waited for, submitit's handle);
    `started`: when it was submitted (time.monotonic)."""
    job_id: str
    stdout: str | None = None
    stderr: str | None = None
    handle: Any = None
    started: float = field(default_factory=time.monotonic)


def sbatch_options(shape: JobShape, dependency: str | None, partition: str | None
                   ) -> dict[str, str]:
    """The sbatch options a Slurm submit of `shape` sets (printed by dry runs)."""
    res = shape.resources
    options = {"job-name": shape.name, "nodes": str(res.nodes),
               "ntasks-per-node": str(res.tasks),
               "cpus-per-task": str(res.cpus_per_task), "mem": f"{res.mem_gb}G",
               "time": _slurm_time(res.time_hours)}
    if res.gpus_per_node:
        options["gpus-per-node"] = str(res.gpus_per_node)
    if partition or res.partition:
        options["partition"] = partition or res.partition
    if dependency:
        options["dependency"] = dependency
    return options


def sbatch_command(options: dict[str, str]) -> str:
    """The sbatch options as a shell command line (each option quoted for the shell)."""
    return "sbatch " + " ".join(shlex.quote(f"--{key}={value}") for key, value in
                                options.items())


def _slurm_time(hours: float) -> str:
    minutes = max(1, round(hours * 60))
    return f"{minutes // 1440}-{minutes % 1440 // 60:02d}:{minutes % 60:02d}:00"


def afterok(job_ids: list[str]) -> str | None:
    """A Slurm dependency on every job in `job_ids` ("<array>" for a whole array,
    "<array>_<task>" for one of its tasks)."""
    ids = list(dict.fromkeys(job_ids))
    return "afterok:" + ":".join(ids) if ids else None


def check_slurm() -> None:
    """Raise SlurmUnavailable unless a Slurm controller answers."""
    if not shutil.which("sbatch") or not shutil.which("squeue"):
        raise SlurmUnavailable("Slurm is not installed here (no sbatch/squeue on PATH); "
                               "use --cluster local, or run on a Slurm login node")
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SlurmUnavailable(f"Slurm controller not reachable ({err}); "
                               "check `scontrol ping`, or use --cluster local") from None
    if ping.returncode != 0 or "UP" not in ping.stdout:
        raise SlurmUnavailable("Slurm controller not reachable (`scontrol ping`: "
                               f"{(ping.stdout + ping.stderr).strip()}); use --cluster local")


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """Live Slurm states of queued or running jobs (finished jobs are absent). A job whose
    dependency failed is BLOCKED: Slurm would keep it pending forever."""
    if not job_ids or not shutil.which("squeue"):
        return {}
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T|%r"], capture_output=True, text=True,
                         timeout=30)
    states = {}
    for line in out.stdout.splitlines():
        job_id, state, reason = (line.split("|") + ["", ""])[:3]
        states[job_id] = "BLOCKED" if reason == "DependencyNeverSatisfied" else state
    return {job_id: states[job_id] for job_id in job_ids if job_id in states}


def make_executor(cluster: str, shape: JobShape, dependency: str | None = None,
                  partition: str | None = None):
    """A submitit executor for jobs of `shape` (on Slurm: see the module doc)."""
    import submitit

    res = shape.resources
    extra = {"slurm_max_num_timeout": shape.max_timeouts} if cluster == "slurm" else {}
    executor = submitit.AutoExecutor(folder=shape.folder, cluster=cluster, **extra)
    timeout_min = max(1, round(res.time_hours * 60))
    params: dict[str, Any] = {"name": shape.name, "timeout_min": timeout_min}
    if cluster == "slurm":
        params.update(nodes=res.nodes, tasks_per_node=res.tasks,
                      cpus_per_task=res.cpus_per_task, mem_gb=res.mem_gb,
                      slurm_signal_delay_s=min(SIGNAL_DELAY_S, timeout_min * 30))
        if res.gpus_per_node:
            params["gpus_per_node"] = res.gpus_per_node
        if res.nodes * res.tasks > 1:
            params["slurm_srun_args"] = ["--kill-on-bad-exit=1"]
        if partition or res.partition:
            params["slurm_partition"] = partition or res.partition
        if dependency:
            params["slurm_additional_parameters"] = {"dependency": dependency}
    executor.update_parameters(**params)
    return executor


@contextmanager
def _stderr_into(path: Path) -> Iterator[None]:
    """File descriptor 2 goes to `path` (appended) for the processes started meanwhile: a
    local job's submitit controller, whose KeyboardInterrupt traceback on Ctrl-C belongs in a
    log, not after the submit's one line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = os.dup(2)
    try:
        with open(path, "a") as log:
            os.dup2(log.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def controller_log(shape: JobShape) -> Path:
    """Where a local job's submitit controller writes (its job's log folder)."""
    return Path(str(shape.folder).split("%j")[0]) / "local-controller.log"


def _job(job: Any) -> Job:
    return Job(str(job.job_id), str(job.paths.stdout), str(job.paths.stderr), job)


class Backend:
    """Runs jobs here, one at a time (submitit's `local` and `debug` executors): the caller
    waits for each job (`wait`) before it submits the next."""
    queues = False          # Slurm: jobs wait in a queue, after their parents' jobs

    def __init__(self, cluster: str, partition: str | None = None):
        self.cluster, self.partition = cluster, partition

    def check(self) -> None:
        """Raise if this backend cannot submit from here."""

    def submit(self, shape: JobShape, after: list[str], call: Callable, *args: Any) -> Job:
        executor = make_executor(self.cluster, shape)
        if self.cluster != "local":
            return _job(executor.submit(call, *args))
        with _stderr_into(controller_log(shape)):
            return _job(executor.submit(call, *args))

    def live(self, job_ids: list[str]) -> dict[str, str]:
        """The jobs among `job_ids` still queued or running (Slurm state; BLOCKED: waiting
        for a failed parent)."""
        return {}

    def cancel(self, job_ids: list[str]) -> None:
        pass

    def wait(self, job: Job) -> None:
        """Until a job submitted here has ended; a failure is not raised (its state files and
        log hold it). Ctrl-C cancels the job rather than leaving it running behind the user's
        back. Queued (Slurm) jobs are not waited for."""
        handle, job.handle = job.handle, None
        if handle is None or self.queues:
            return
        try:
            handle.result()
        except KeyboardInterrupt:
            handle.cancel(check=False)
            raise Interrupted(1) from None
        except Exception:
            pass


class SlurmBackend(Backend):
    queues = True

    def check(self) -> None:
        check_slurm()

    def submit(self, shape: JobShape, after: list[str], call: Callable, *args: Any) -> Job:
        executor = make_executor("slurm", shape, afterok(after), self.partition)
        return _job(executor.submit(call, *args))

    def submit_array(self, shape: JobShape, after: list[str], call: Callable,
                     *arg_lists: list) -> list[Job]:
        """One array job, a task per argument tuple."""
        executor = make_executor("slurm", shape, afterok(after), self.partition)
        return [_job(job) for job in executor.map_array(call, *arg_lists)]

    def live(self, job_ids: list[str]) -> dict[str, str]:
        return slurm_states([job_id for job_id in job_ids if job_id])

    def cancel(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            subprocess.run(["scancel", job_id], capture_output=True, timeout=30)


def backend_for(cluster: str, partition: str | None = None) -> Backend:
    if cluster not in CLUSTERS:
        raise ValueError(f"unknown cluster '{cluster}' (known: {', '.join(CLUSTERS)})")
    return (SlurmBackend if cluster == "slurm" else Backend)(cluster, partition)
