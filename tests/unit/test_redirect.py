"""tlsmgr.redirect: Postfix's data_redirect rules for caches and plain files (pure, and stat)."""

from __future__ import annotations

from tlsmgr import redirect


def redirected(database, dir_uid, owner_uid=100):
    return redirect.data_redirect(
        database,
        default_type="hash",
        data_directory="/var/lib/postfix",
        mail_owner="postfix",
        mail_owner_uid=owner_uid,
        dir_uid=dir_uid,
    )


def test_redirect_rules():
    assert redirected("btree:/etc/postfix/smtp_scache", 0) == (
        "btree:/var/lib/postfix/smtp_scache",
        [
            "request to update table btree:/etc/postfix/smtp_scache in non-postfix directory"
            " /etc/postfix",
            "redirecting the request to postfix-owned data_directory /var/lib/postfix",
        ],
    )
    assert redirected("/etc/postfix/smtp_scache", 0)[0] == "hash:/var/lib/postfix/smtp_scache"
    assert redirected("btree:/srv/pf/smtp_scache", 100) == ("btree:/srv/pf/smtp_scache", [])
    assert redirected("btree:/no/such/dir/x", None) == ("btree:/no/such/dir/x", [])
    assert redirected("btree:relative", 0)[1][0].endswith("directory .")
    assert redirected("ldap:/etc/x", 0) == ("ldap:/etc/x", [])


def test_redirect_file():
    kwargs = dict(data_directory="/var/lib/postfix", mail_owner="postfix", mail_owner_uid=100)
    assert redirect.data_redirect_file("/etc/postfix/prng_exch", dir_uid=0, **kwargs) == (
        "/var/lib/postfix/prng_exch",
        [
            "request to update file /etc/postfix/prng_exch in non-postfix directory /etc/postfix",
            "redirecting the request to postfix-owned data_directory /var/lib/postfix",
        ],
    )
    assert redirect.data_redirect_file("/srv/prng_exch", dir_uid=100, **kwargs)[1] == []
    assert redirect.redirect_file("/no/such/dir/prng_exch", **kwargs)[1] == []
