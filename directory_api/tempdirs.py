"""Private temporary directories shared by a process and the children it forks, removed even after a SIGKILL.

serve keeps its nonce store and its metrics in such directories. Each holds
an owner file locked (flock) by the process that made it, and so by every
process forked from it, until the last of them ends, however it ends: the
kernel releases the lock, unlike a pid file. A directory whose lock is free
was left by processes killed outright, and the next one made removes it.
"""

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable

OWNER_LOCK = "owner.lock"


def make(prefix: str, parent: str | None = None) -> tuple[str, int]:
    """A new directory in `parent` (the temporary directory), and the fd that holds its lock (see remove())."""
    directory = tempfile.mkdtemp(prefix=prefix, dir=parent)
    # Locked under another name, then renamed: a cleaner never sees the lock file unlocked.
    unlocked = os.path.join(directory, f"{OWNER_LOCK}.new")
    fd = os.open(unlocked, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.rename(unlocked, os.path.join(directory, OWNER_LOCK))
    return directory, fd


def remove(directory: str, owner: int) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    os.close(owner)


def remove_abandoned(
    prefix: str, parent: str | None = None, before_removing: Callable[[str], bool] = lambda directory: True
) -> list[str]:
    """Remove the directories named `prefix`… in `parent` (the temporary directory) whose processes are all gone.

    `before_removing(directory)` runs first, the directory still locked against other cleaners; it may
    read what is left there, and returns False to keep the directory.
    """
    parent = parent or tempfile.gettempdir()
    removed: list[str] = []
    try:
        entries = [entry for entry in os.scandir(parent) if entry.name.startswith(prefix)]
    except OSError:
        return removed
    for entry in entries:
        try:
            fd = os.open(os.path.join(entry.path, OWNER_LOCK), os.O_RDWR)
        except OSError:
            continue  # no lock: another user's, or made by a version without one (which cannot be told from one in use)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # in use
        else:
            if before_removing(entry.path):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.path)
        finally:
            os.close(fd)
    return removed
