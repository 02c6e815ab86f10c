"""systemd's notify protocol (master/sdnotify.py) and the unit template (master/systemd_unit.py).

The receiving end is a real unix datagram socket (support.notify); the end-to-end
behaviour of `minipostfix start-fg` is in tests/process/test_systemd.py.
"""

from __future__ import annotations

import os

import pytest

from master import embedded
from master.log import log_init
from master.sdnotify import ENV_NOTIFY_SOCKET, Notifier, notify_address
from master.systemd_unit import PLACEHOLDERS, render_unit
from support.notify import NotifyListener


@pytest.fixture
def warnings(capfd):
    """Log to stderr only (not syslog); returns a function that gives what was logged."""
    log_init("sdnotify-test", maillog_file="/dev/stderr")
    yield lambda: capfd.readouterr().err
    log_init("sdnotify-test", stderr=True, tool=True)


@pytest.mark.parametrize(
    ("value", "address"),
    [("/run/systemd/notify", "/run/systemd/notify"), ("@abc", "\0abc"),
     ("@", None), ("vsock:2:1234", None), ("relative/path", None), ("", None)],
)  # fmt: skip
def test_addresses(value, address):
    assert notify_address(value) == address


def test_messages_reach_the_socket_one_datagram_each(tmp_path):
    with NotifyListener(tmp_path) as manager:
        notifier = Notifier(manager.address)
        assert notifier.enabled
        assert notifier.ready() and notifier.reloading() and notifier.stopping()
        assert notifier.send("STATUS=serving", "ERRNO=0")
        assert manager.next() == {"READY": "1", "MAINPID": str(os.getpid())}
        reloading = manager.next()
        assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
        assert manager.next() == {"STOPPING": "1"}
        assert manager.next() == {"STATUS": "serving", "ERRNO": "0"}
        assert manager.pending() == []


def test_abstract_namespace():
    with NotifyListener(abstract=True) as manager:
        assert manager.address.startswith("@")
        assert Notifier(manager.address).ready()
        assert manager.next()["READY"] == "1"


def test_from_environment_takes_the_variable_away(monkeypatch, tmp_path):
    with NotifyListener(tmp_path) as manager:
        monkeypatch.setenv(ENV_NOTIFY_SOCKET, manager.address)
        notifier = Notifier.from_environment()
        assert ENV_NOTIFY_SOCKET not in os.environ
        assert notifier.ready()
        assert manager.next()["READY"] == "1"
    monkeypatch.delenv(ENV_NOTIFY_SOCKET, raising=False)
    silent = Notifier.from_environment()
    assert not silent.enabled and silent.ready() is False


def test_an_unusable_address_is_one_warning(warnings):
    notifier = Notifier("vsock:2:1234")
    assert not notifier.enabled and notifier.ready() is False and notifier.stopping() is False
    assert warnings().count("unsupported address; not notifying systemd") == 1


def test_a_failed_send_is_a_warning_not_an_error(tmp_path, warnings):
    notifier = Notifier(str(tmp_path / "nobody-listens"))
    assert notifier.ready() is False
    logged = warnings()
    assert "warning: cannot notify systemd" in logged and "No such file or directory" in logged


def test_the_template_is_rendered_with_absolute_paths():
    template = open(embedded.embedded_file(embedded.UNIT)).read()
    text = render_unit(template, "/etc/mpfx", "/opt/mpfx/bin/minipostfix")
    assert "ExecStart=/opt/mpfx/bin/minipostfix -c /etc/mpfx start-fg\n" in text
    assert "ExecReload=/opt/mpfx/bin/minipostfix -c /etc/mpfx reload\n" in text
    assert not any(p in text for p in PLACEHOLDERS)
    for config_dir, program in (("etc", "/bin/x"), ("/etc/a b", "/bin/x"), ("/etc", "x")):
        with pytest.raises(ValueError, match="absolute path without blanks"):
            render_unit(template, config_dir, program)
