"""`minipostfix status --json` from a real master: valid against docs/status.schema.json, and true.

The instance runs our tlsmgr, a single-client testd service whose child stays busy
while the test holds its connection, and a service whose command fails at once
(throttled).  The document is checked against the schema and against what the test
did: its pids, the seeds it asked for, the throttle it caused.
"""

from __future__ import annotations

import json

from support.instance import OUR_TLSMGR, TLSMGR_LINE, MiniInstance
from support.statusdoc import validate

MASTER_CF = TLSMGR_LINE + "one unix - n n - 2 testd single 30\nbad unix - n n - 1 testd fail\n"


def status_json(inst: MiniInstance) -> tuple[int, dict]:
    result = inst.cli("status", "--json")
    document = json.loads(result.stdout)
    validate(document)
    return result.returncode, document


def service(document: dict, name: str) -> dict:
    [found] = [s for s in document["services"] if s["name"] == name]
    return found


def test_status_json_of_a_running_and_a_stopped_master():
    with MiniInstance(master_cf=MASTER_CF, tlsmgr=OUR_TLSMGR) as inst:
        inst.start()
        with inst.client() as client:
            for _ in range(3):
                assert client.seed(16).ok
        with inst.connect("private/bad"), inst.connect("private/one"):  # held: one busy child
            inst.wait_log("bad command startup -- throttling")

            def settled() -> dict | None:
                rc, document = status_json(inst)
                one = service(document, "one")
                busy_children = [c for c in one["children"] if c["state"] == "busy"]
                ready = service(document, "bad")["throttle"] and busy_children
                return document if rc == 0 and ready else None

            document = inst.wait_for(settled, "status --json to show the busy child and throttle")
            text = inst.cli("status", "-v").stdout
        assert document["running"] is True
        assert document["pid"] == document["master"]["pid"] == inst.master_pid()
        assert document["master"]["config_directory"] == str(inst.etc)
        # postlog: the postlogd service MiniInstance adds for its maillog_file.
        assert [s["name"] for s in document["services"]] == ["tlsmgr", "one", "bad", "postlog"]
        [child] = service(document, "tlsmgr")["children"]
        assert child["pid"] == inst.tlsmgr_pid()
        assert f"  pid {child['pid']} idle" in text or f"  pid {child['pid']} busy" in text
        bad = service(document, "bad")
        assert bad["throttles"] == 1 and bad["children"] == []
        # What the child wrote is kept out of the world-readable state file: the
        # reason names the exit only, and the stderr lines come to root apart.
        assert bad["throttle"]["reason"].endswith("exit status 1 before its first request")
        assert bad["last_stderr"]["lines"][-1] == "testd: deliberate startup failure"
        assert bad["last_stderr"]["pid"] == int(bad["last_exit"].split()[1])
        assert 0 < bad["throttle"]["remaining"] <= 60
        assert bad["last_exit"].endswith("exit status 1")
        tlsmgr = document["providers"]["tlsmgr"]
        assert tlsmgr["error"] is None
        assert tlsmgr["data"]["requests"]["seed"] == 3
        assert tlsmgr["data"]["caches"]["smtpd"]["enabled"] == 0  # no database in main.cf
        # status -v asked once more: its own stats request.
        assert f"tlsmgr: requests served {sum(tlsmgr['data']['requests'].values()) + 1}" in text

        inst.stop()
        rc, stopped = status_json(inst)
        assert rc == 1
        assert (stopped["running"], stopped["pid"], stopped["master"]) == (False, None, None)
        assert stopped["services"] == []
        assert stopped["providers"]["tlsmgr"]["data"] is None
        assert stopped["providers"]["tlsmgr"]["error"].startswith("not reachable: ")
