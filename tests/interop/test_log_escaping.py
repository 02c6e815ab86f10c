"""Control characters in logged text: our tlsmgr writes the bytes Postfix's tlsmgr writes.

A lookup whose cache_id holds a newline, a tab, DEL, an escape, UTF-8, an
invalid byte, a C1 control and an encoded surrogate is sent to Postfix's
tlsmgr under Postfix's master and to ours under ours, with smtp_tls_loglevel
2 (cache logging) and compatibility_level 3.6 (smtputf8_enable on: UTF-8 is
printable) or 0 (every non-ASCII byte is "?").  The `lookup ... id=` line must
be byte for byte the same, one line, and no client byte may start a line.
"""

from __future__ import annotations

import pytest

from support.attrs import read_reply, request
from support.instance import OUR_TLSMGR, MiniInstance, PostfixInstance
from support.postfix import SBIN

pytestmark = [pytest.mark.postfix, pytest.mark.root]

CACHE_ID = (
    b"a\nDec 04 12:00:00 mail postfix/master[1]: b\tc\x7fd\x1be\xc3\xa9f\xffg\xc2\x85h\xed\xa0\x80i"
)


def logged_lookup(kind: type, tlsmgr, compatibility_level: str) -> bytes:
    main_cf = {
        "smtp_tls_session_cache_database": "hash:${data_directory}/smtp_scache",
        "smtp_tls_loglevel": "2",
        "compatibility_level": compatibility_level,
    }
    with kind(main_cf=main_cf, tlsmgr=tlsmgr) as inst, inst.running():
        with inst.connect("private/tlsmgr") as sock:
            assert read_reply(sock) == [(b"protocol", b"tlsmgr_protocol")]
            sock.sendall(
                request(b"request", b"lookup", b"cache_type", b"smtp", b"cache_id", CACHE_ID)
            )
            assert read_reply(sock)[0] == (b"status", b"4294967295")
        inst.wait_log("lookup smtp session")
        lines = inst.maillog.read_bytes().split(b"\n")
    (line,) = [line for line in lines if b"lookup smtp session" in line]
    assert not [line for line in lines if line.startswith(b"Dec 04 12:00:00")]
    return line.split(b"]: ", 1)[1]


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (
            "3.6",
            b"lookup smtp session id=a?Dec 04 12:00:00 mail postfix/master[1]: "
            b"b?c?d?e\xc3\xa9f?g\xc2\x85h\xed\xa0\x80i",
        ),
        (
            "0",
            b"lookup smtp session id=a?Dec 04 12:00:00 mail postfix/master[1]: b?c?d?e??f?g??h???i",
        ),
    ],
)
def test_escaping_matches_postfix_byte_for_byte(level, expected):
    theirs = logged_lookup(PostfixInstance, SBIN / "tlsmgr", level)
    ours = logged_lookup(MiniInstance, OUR_TLSMGR, level)
    assert theirs == expected
    assert ours == theirs
