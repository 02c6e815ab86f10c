"""The skeleton tests' lab: instances without a master, fake masters, echo daemons.

SYNOPSIS
    from support.lab import Lab

    with Lab() as lab:
        inst = lab.instance(max_idle="100s")          # a LabInstance: main.cf, queue, bin
        write_daemon_script(inst.bin / "echo", "multi")
        fm = lab.master(inst, "echo", maxproc=1)      # a FakeMaster: listener, status, flow
        # or both at once: inst, fm = lab.echo("single", {"max_use": "2"}, transport="inet")
        # or with its first child: inst, fm, child = lab.spawn_echo("multi")
    # every child is killed and reaped, every directory removed

DESCRIPTION
    Lab owns what it made: closing it closes every FakeMaster (which
    kills and reaps its children) and then every instance.  Each
    instance gets our postlogd on its public/postlog, through a fake
    master of its own, and is returned once postlogd writes the maillog.  The `lab`
    fixture of tests/process yields one.
"""

from __future__ import annotations

from typing import Any

from master import proto
from support.echo_daemon import write_daemon_script
from support.fake_master import Child, FakeMaster
from support.instance import LabInstance


class Lab:
    """Owns instances and fake masters; closing it kills and reaps every child."""

    def __init__(self) -> None:
        self._instances: list[LabInstance] = []
        self._masters: list[FakeMaster] = []

    def instance(self, **main_cf: str) -> LabInstance:
        """A LabInstance with our postlogd running on its public/postlog."""
        inst = LabInstance(main_cf)
        self._instances.append(inst)
        logger = self.master(inst, "postlogd", service="postlog", transport="unix-dgram")
        logger.spawn(env={proto.ENV_MAIL_CONFIG: str(inst.postlogd_etc)})
        inst.wait_for(inst.sync_log, "postlogd to write the maillog")
        return inst

    def master(self, inst: LabInstance, command: str = "echo", **options: Any) -> FakeMaster:
        fm = FakeMaster(inst, command, **options)
        self._masters.append(fm)
        return fm

    def echo(
        self,
        kind: str = "multi",
        main_cf: dict[str, str] | None = None,
        handover: bool = False,
        **options: Any,
    ) -> tuple[LabInstance, FakeMaster]:
        """An instance with the echo daemon installed (handing connections over when it
        drains, with handover), and its fake master (not started)."""
        inst = self.instance(**(main_cf or {}))
        write_daemon_script(inst.bin / "echo", kind, **({"handover": True} if handover else {}))
        return inst, self.master(inst, "echo", **options)

    def spawn_echo(
        self, kind: str, main_cf: dict[str, str] | None = None, **options: Any
    ) -> tuple[LabInstance, FakeMaster, Child]:
        """echo(), then its first child: (instance, fake master, child)."""
        inst, fm = self.echo(kind, main_cf, **options)
        return inst, fm, fm.spawn()

    def close(self) -> None:
        for fm in self._masters:
            fm.close()
        for inst in self._instances:
            inst.close()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
