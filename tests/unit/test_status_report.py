"""The status report model: the state file read once, derived figures, the --json document.

Every document made here is validated against docs/status.schema.json; the real
command's output is validated in tests/process/test_status_json.py.
"""

from __future__ import annotations

import copy

import jsonschema
import pytest

from master.statusreport import (
    SCHEMA_VERSION,
    MasterStatus,
    ProviderStatus,
    StateError,
    StatusReport,
)
from master.statusview import report_lines
from support.statusdoc import validate

STATE = {
    "pid": 10,
    "version": "0.1.0",
    "config_directory": "/etc/minipostfix",
    "started": 1000.0,
    "forks": 4,
    "services": [
        {
            "name": "tlsmgr", "type": "unix", "endpoint": "private/tlsmgr",
            "command": "/usr/lib/minipostfix/tlsmgr", "maxproc": 1, "spawns": 1, "throttles": 0,
            "avail": 1, "throttled": False, "throttle_until": 0.0, "throttle_reason": "",
            "last_exit": "",
            "children": [
                {"pid": 11, "generation": 1, "state": "idle", "use_count": 52, "started": 1001.5},
            ],
        },
        {
            "name": "smtp", "type": "inet", "endpoint": "[127.0.0.1]:10025",
            "command": "/usr/lib/minipostfix/testsmtpd", "maxproc": 0, "spawns": 2,
            "throttles": 0, "avail": 0, "throttled": False, "throttle_until": 0.0,
            "throttle_reason": "", "last_exit": "pid 12 killed by signal 9 (SIGKILL)",
            "children": [
                {"pid": 13, "generation": 3, "state": "busy", "use_count": 0, "started": 1090},
                {"pid": 14, "generation": 4, "state": "idle", "use_count": 2, "started": 1095.0},
            ],
        },
        {
            "name": "bad", "type": "unix", "endpoint": "private/bad", "command": "/x/bad",
            "maxproc": 1, "spawns": 3, "throttles": 2, "avail": 0, "throttled": True,
            "throttle_until": 1130.5, "throttle_reason": "pid 7 exit status 1 before its first "
            "request", "last_exit": "pid 7 exit status 1", "children": [],
        },
    ],
}  # fmt: skip


def test_the_state_file_becomes_the_model():
    master = MasterStatus.from_state(STATE)
    assert (master.pid, master.forks, master.uptime(1100.0)) == (10, 4, 100.0)
    tlsmgr, smtp, bad = master.services
    assert tlsmgr.children[0].uses == 52 and tlsmgr.throttle is None and tlsmgr.last_exit is None
    assert (smtp.count("idle"), smtp.count("busy")) == (1, 1)
    assert smtp.children[0].started == 1090.0 and smtp.children[0].age(1100.0) == 10.0
    assert bad.throttle.reason == "pid 7 exit status 1 before its first request"
    assert bad.throttle.remaining(1100.0) == 30
    assert bad.throttle.remaining(2000.0) == 0
    assert MasterStatus.from_state({}) is None


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("forks"), "state file: no 'forks'"),
        (lambda s: s.update(pid="10"), "state file: 'pid' is str, not int"),
        (lambda s: s["services"][0].update(throttled=1), "'throttled' is int, not bool"),
        (lambda s: s["services"][1]["children"][0].pop("use_count"), "no 'use_count'"),
        (lambda s: s["services"].append("x"), "state file: str where an object belongs"),
    ],
)
def test_a_state_file_that_is_not_the_masters_says_which_key(edit, message):
    state = copy.deepcopy(STATE)
    edit(state)
    with pytest.raises(StateError, match=message):
        MasterStatus.from_state(state)


def test_the_json_document_follows_the_schema():
    tlsmgr = ProviderStatus("tlsmgr", None, "not reachable: no socket private/tlsmgr", ())
    other = ProviderStatus("other", {"queue": [1, 2]}, None, ("queue 1 2",))
    report = StatusReport(1100.0, 10, MasterStatus.from_state(STATE), (tlsmgr, other))
    document = report.to_json()
    validate(document)
    assert document["schema_version"] == SCHEMA_VERSION
    assert document["master"]["uptime"] == 100.0
    bad = document["services"][2]
    assert bad["throttle"] == {
        "reason": "pid 7 exit status 1 before its first request",
        "until": 1130.5,
        "remaining": 30,
    }
    assert document["services"][1]["children"][0] == {
        "pid": 13, "generation": 3, "state": "busy", "uses": 0, "started": 1090.0, "age": 10.0,
    }  # fmt: skip
    assert document["providers"]["other"] == {"data": {"queue": [1, 2]}, "error": None}


def test_stderr_lines_come_from_their_own_file_for_whoever_may_read_it():
    stderr = {"bad/unix": {"pid": 7, "lines": ["Traceback ...", "ImportError: x"]}}
    as_root = StatusReport(1100.0, 10, MasterStatus.from_state(STATE, stderr))
    as_anyone = StatusReport(1100.0, 10, MasterStatus.from_state(STATE, {}))
    validate(as_root.to_json())
    validate(as_anyone.to_json())
    assert as_root.to_json()["services"][2]["last_stderr"] == {
        "pid": 7, "lines": ["Traceback ...", "ImportError: x"],
    }  # fmt: skip
    assert [s["last_stderr"] for s in as_anyone.to_json()["services"]] == [None, None, None]
    assert '  last stderr line (pid 7): "ImportError: x"' in report_lines(as_root)
    assert not any("stderr" in line for line in report_lines(as_anyone))
    with pytest.raises(StateError, match="'lines'"):
        MasterStatus.from_state(STATE, {"bad/unix": {"pid": 7}})


def test_not_running_and_no_state_yet():
    stopped = StatusReport(1100.0, None, None).to_json()
    validate(stopped)
    assert (stopped["running"], stopped["pid"], stopped["master"]) == (False, None, None)
    assert stopped["services"] == [] and stopped["providers"] == {}
    young = StatusReport(1100.0, 10, None)
    validate(young.to_json())
    assert report_lines(young) == [
        "master: no state file yet (it is written within a second of a change)"
    ]
    assert report_lines(StatusReport(1100.0, None, None)) == []


def test_the_schema_refuses_what_it_does_not_describe():
    document = StatusReport(1100.0, 10, MasterStatus.from_state(STATE)).to_json()
    document["services"][0]["children"][0]["state"] = "sleepy"
    with pytest.raises(jsonschema.ValidationError, match="'sleepy' is not one of"):
        validate(document)
    document = StatusReport(1100.0, 10, MasterStatus.from_state(STATE)).to_json()
    document["master"]["colour"] = "blue"
    with pytest.raises(jsonschema.ValidationError, match="'colour' was unexpected"):
        validate(document)


def test_text_and_json_show_the_same_figures():
    report = StatusReport(1100.0, 10, MasterStatus.from_state(STATE))
    lines, document = report_lines(report), report.to_json()
    smtp = document["services"][1]
    assert (
        f"service smtp (inet [127.0.0.1]:10025): {smtp['command']}, maxproc unlimited,"
        " 2 child(ren) (1 idle), 2 spawn(s)"
    ) in lines
    assert "  pid 13 busy, 0 use(s), up 10s" in lines
    assert "  throttled for 30s more: pid 7 exit status 1 before its first request" in lines
    assert "  last exit: pid 12 killed by signal 9 (SIGKILL)" in lines
