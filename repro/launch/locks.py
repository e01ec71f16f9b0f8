"""One submit at a time per node: an exclusive lock on `<node state folder>/.submit.lock`.

The scheduler holds a node's lock from reading what earlier submits recorded for it until its
new job is recorded (Slurm) or has ended (here), so two `repro submit` of the same target
started together never both submit a run, shard or score job: the second waits, then finds
the node done, or its job recorded and live. The lock is `fcntl.flock`, which the kernel drops
when its holder dies (killed, node lost), so a lock file left behind is not stale: the next
submit simply takes it. The file names the holder (pid, host, since) for the waiting message.
On a shared filesystem the lock spans hosts where the filesystem supports locks (NFS with
lockd, Lustre and GPFS with their lock options; Linux maps flock to them).
"""
from __future__ import annotations

import datetime as dt
import fcntl
import os
import socket
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterator

LOCK_NAME = ".submit.lock"


def holder(path: Path) -> str:
    """Who holds the lock at `path`, as its file says ("" when it says nothing)."""
    try:
        return path.read_text().strip()
    except OSError:
        return ""


@contextmanager
def node_lock(folder: Path, what: str, echo: Callable[[str], None] = print) -> Iterator[None]:
    """Hold `folder`'s submit lock; while another process holds it, say so once and wait."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            echo(f"waiting for another repro submit ({holder(path) or 'unknown process'}) "
                 f"working on {what}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                         f"{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}\n")
            handle.flush()
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def node_locks(folders: list[tuple[Path, str]], echo: Callable[[str], None] = print
               ) -> Iterator[None]:
    """Hold the locks of several nodes (an array's shards), taken in the order given."""
    with ExitStack() as stack:
        for folder, what in folders:
            stack.enter_context(node_lock(folder, what, echo))
        yield
