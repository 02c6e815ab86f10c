"""Small file systems to fill for real: a tmpfs of a given size, and a ballast file.

SYNOPSIS
    from support.disks import mount_tmpfs, unmount, fill

    path = mount_tmpfs("16m")        # a 0755 folder on a new tmpfs; None when mount fails
    ballast = fill(path, leave=0)    # path/ballast, leaving about `leave` bytes free
    unmount(path)                    # unmounted (lazily when still busy) and removed

DESCRIPTION
    Root only (mount(8)); the `tmpfs` fixture in tests/conftest.py skips
    without root and unmounts after the test.  fill() appends to one
    ballast file per folder, so calling it again takes what is left;
    unlink the file to give the room back.
"""

from __future__ import annotations

import os
import subprocess
import tempfile


def mount_tmpfs(size: str) -> tuple[str | None, str]:
    """(a 0755 folder on a new tmpfs of `size`, "") or (None, why mount failed)."""
    path = tempfile.mkdtemp(dir="/tmp")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", path],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        os.rmdir(path)
        return None, proc.stderr.strip()
    return path, ""


def unmount(path: str) -> None:
    """Unmount and remove; lazily when a process of a failed test still holds a file."""
    if subprocess.run(["umount", path], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", path], capture_output=True)
    os.rmdir(path)


def fill(folder: str, leave: int) -> str:
    """Grow folder/ballast until about `leave` bytes are free; its path."""
    st = os.statvfs(folder)
    path = os.path.join(folder, "ballast")
    with open(path, "ab") as fp:
        fp.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return path
