"""The postconf comparison's normalisation: locations and program names, nothing else.

support/postconf_diff.py normalises what differs by design before the differential tests compare
stderr; this test pins that normalisation: the same warnings from both tools compare equal, and
the text of each warning survives.
"""

from __future__ import annotations

from support.postconf_diff import normalized


def test_normalisation_of_locations_and_program_names():
    theirs = (
        "postconf: warning: /tmp/x/main.cf, line 4: overriding earlier entry: a=1\n"
        "postconf: warning: ./main.cf: unused parameter: b=2\n"
        "postconf: warning: ./main.cf: unused parameter: b=2\n"
        "postconf: warning: nosuch: unknown parameter\n"
    )
    ours = (
        "minipostconf: warning: main.cf:4: overriding earlier entry: a=1\n"
        "minipostconf: warning: main.cf:7: unused parameter: b=2\n"
        "minipostconf: warning: nosuch: unknown parameter\n"
    )
    assert (
        normalized(theirs)
        == normalized(ours)
        == {
            "warning: overriding earlier entry: a=1",
            "warning: unused parameter: b=2",
            "warning: nosuch: unknown parameter",
        }
    )
