"""As root: code planted where `minipostfix start` is run from never runs.

The master is a Python process that `minipostfix start` starts as root; it is
started isolated (`python -I`: no current directory on sys.path, no PYTHON*
variables) from `/`.  A `master/` package or a `daemon.py` (python-daemon's
module name) planted in the caller's current directory would otherwise be
imported by the root master.  The planted code writes a marker file: the
marker must not exist, and the mail system must start as usual.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from support import procs
from support.instance import MINIPOSTFIX, OUR_TLSMGR, MiniInstance

pytestmark = pytest.mark.root

ECHO = "echo unix - n n - 0 testd echo 30\n"
# What is planted: our own package (imported first), or python-daemon's module,
# which only the master imports (after our package was found where it belongs).
PLANTS = {
    "master package": ["master/__init__.py", "master/control.py"],
    "daemon module": ["daemon.py"],
}


def plant(folder: Path, names: list[str], marker: Path) -> None:
    """Python files that, when imported, append their name and uid to `marker`."""
    for name in names:
        path = folder / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(
            "import os\n"
            f"with open({str(marker)!r}, 'a') as fp:\n"
            f"    fp.write('planted {name} ran as uid %d\\n' % os.getuid())\n"
        )


@pytest.mark.parametrize("what", PLANTS)
def test_start_ignores_python_files_in_the_current_directory(folder, what):
    here = Path(folder)
    marker = here / "marker"
    plant(here, PLANTS[what], marker)
    with MiniInstance(master_cf=ECHO) as inst:
        started = subprocess.run(
            [MINIPOSTFIX, "-c", str(inst.etc), "start"],
            cwd=here, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        try:
            assert not marker.exists(), marker.read_text()
            assert started.returncode == 0, started
            with inst.connect("private/echo") as sock:
                sock.sendall(b"hi\n")
                assert sock.makefile("rb").readline().split()[2] == b"hi"
        finally:
            inst.cli("stop")
    assert not marker.exists()


def test_the_callers_pythonpath_reaches_neither_the_master_nor_its_children(folder):
    """A sitecustomize module on the caller's PYTHONPATH runs in the caller's own
    `minipostfix` (its choice), but not in the master (isolated) nor in a child (the
    master starts children with its cleaned environment: import_environment only)."""
    here = Path(folder)
    marker = here / "marker"
    (here / "sitecustomize.py").write_text(
        "import os, sys\n"
        f"with open({str(marker)!r}, 'a') as fp:\n"
        "    fp.write('%d %s\\n' % (os.getpid(), sys.argv[0]))\n"
    )
    with MiniInstance(tlsmgr=OUR_TLSMGR) as inst:
        env = dict(os.environ, PYTHONPATH=str(here))
        start = subprocess.Popen(
            [MINIPOSTFIX, "-c", str(inst.etc), "start"], cwd="/", env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            _out, err = start.communicate(timeout=60)
            assert start.returncode == 0, err
            assert inst.client().seed(32).status == 0  # a tlsmgr child runs now
            tlsmgr = inst.tlsmgr_pid()
            assert [line.split()[0] for line in marker.read_text().splitlines()] == [str(start.pid)]
            assert "PYTHONPATH" not in procs.environ(tlsmgr)
        finally:
            inst.cli("stop")
