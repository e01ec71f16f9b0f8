"""repro/jobs/run.py: whether the process that wrote a run's running.json still runs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from repro.jobs.state import process_alive, provenance as _provenance


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_a_reused_pid_is_not_the_process_that_wrote_running_json():
    """running.json records the process's start (boot id and start time); a live process
    with the pid but another start (the pid was recycled, or the host rebooted) is not the
    job, so `repro status` shows it lost and a submit does not wait for it."""
    record = _provenance()          # what running.json holds, written by this process
    ticks = Path(f"/proc/{os.getpid()}/stat").read_text().rpartition(")")[2].split()[19]
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert process_alive({**record, "process_start": f"{boot}:{ticks}"}) is True
    assert process_alive({**record, "process_start": f"{boot}:{int(ticks) + 1}"}) is False
    assert process_alive({**record, "process_start": f"another-boot:{ticks}"}) is False
    assert record.get("process_start") == f"{boot}:{ticks}" and process_alive(record) is True
    older = {key: value for key, value in record.items() if key != "process_start"}
    assert process_alive(older) is True     # a running.json from before: the pid alone
