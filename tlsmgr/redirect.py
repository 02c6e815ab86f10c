"""Postfix's data_redirect: files named in a folder mail_owner does not own go to data_directory.

SYNOPSIS
    from tlsmgr import redirect

    redirect.data_redirect(database, default_type=, data_directory=,
                           mail_owner=, mail_owner_uid=, dir_uid=)
        -> ("type:path", warnings)                            # pure
    redirect.redirect_database(database, ...)   # the same, stat(2)ing the folder
    redirect.data_redirect_file(path, ..., dir_uid=) -> (path, warnings)   # pure
    redirect.redirect_file(path, ...)           # the same, stat(2)ing the folder
    redirect.split_database(database, default_type) -> (type, path)

DESCRIPTION
    A cache named `type:path` (without a prefix, default_type) whose
    folder exists and is not owned by mail_owner is moved into
    data_directory under its own name, with Postfix's two warnings
    (data_redirect_map() in Postfix's data_redirect.c):
        request to update table btree:/etc/postfix/smtp_scache in
            non-postfix directory /etc/postfix
        redirecting the request to postfix-owned data_directory /var/lib/postfix
    Only types that write files are redirected (REDIRECT_TYPES: hash,
    btree, dbm, lmdb, cdb, sdbm, dbz); a folder that does not exist is
    left alone, as is one mail_owner owns.  A bare name's folder is ".".
    data_redirect_file() does the same for a plain file (the PRNG
    exchange file), with "file PATH" in the first warning.

    The data_* functions are pure: `dir_uid` is the owner of the file's
    folder, None when it does not exist.  The redirect_* wrappers stat(2)
    the folder themselves; call them with the ids that will open the
    file.

SECURITY
    Why the rule exists (data_redirect.c): since Postfix 2.5 tlsmgr opens
    its files as mail_owner, never with root privilege, so that a file's
    owner matches the trust level of its content; a legacy setting that
    names a file in a folder mail_owner does not own is redirected rather
    than opened there.

SEE ALSO
    src/global/data_redirect.c (Postfix); tlsmgr/scache.py, tlsmgr/daemon.py
"""

from __future__ import annotations

import os
from typing import Any

REDIRECT_TYPES = ("hash", "btree", "dbm", "lmdb", "cdb", "sdbm", "dbz")


def split_database(database: str, default_type: str = "hash") -> tuple[str, str]:
    """ "type:path" -> (type, path); no prefix means default_type."""
    kind, sep, path = database.partition(":")
    return (kind, path) if sep else (default_type, database)


def data_redirect(
    database: str,
    *,
    default_type: str,
    data_directory: str,
    mail_owner: str,
    mail_owner_uid: int,
    dir_uid: int | None,
) -> tuple[str, list[str]]:
    """Postfix's data_redirect_map(), pure: `dir_uid` is the owner of the
    file's folder, None when it does not exist.  Returns "type:path" and
    the warnings to log."""
    kind, path = split_database(database, default_type)
    if kind not in REDIRECT_TYPES or dir_uid is None or dir_uid == mail_owner_uid:
        return f"{kind}:{path}", []
    folder = _dirname(path)
    warnings = [
        f"request to update table {database} in non-{mail_owner} directory {folder}",
        f"redirecting the request to {mail_owner}-owned data_directory {data_directory}",
    ]
    return f"{kind}:{data_directory}/{os.path.basename(path.rstrip('/'))}", warnings


def data_redirect_file(
    path: str, *, data_directory: str, mail_owner: str, mail_owner_uid: int, dir_uid: int | None
) -> tuple[str, list[str]]:
    """Postfix's data_redirect_file() (the PRNG exchange file), pure, as
    data_redirect(): returns the path and the warnings to log."""
    if dir_uid is None or dir_uid == mail_owner_uid:
        return path, []
    warnings = [
        f"request to update file {path} in non-{mail_owner} directory {_dirname(path)}",
        f"redirecting the request to {mail_owner}-owned data_directory {data_directory}",
    ]
    return f"{data_directory}/{os.path.basename(path.rstrip('/'))}", warnings


def redirect_file(path: str, **kwargs: Any) -> tuple[str, list[str]]:
    """data_redirect_file() with dir_uid taken from stat(2) of the file's folder."""
    return data_redirect_file(path, dir_uid=_dir_uid(path), **kwargs)


def _dir_uid(path: str) -> int | None:
    try:
        return os.stat(_dirname(path)).st_uid
    except OSError:
        return None


def _dirname(path: str) -> str:
    """sane_dirname(): "." for a bare name, "/" for the root."""
    return os.path.dirname(path.rstrip("/")) or ("/" if path.startswith("/") else ".")


def redirect_database(database: str, **kwargs: Any) -> tuple[str, list[str]]:
    """data_redirect() with dir_uid taken from stat(2) of the file's folder."""
    _, path = split_database(database, kwargs["default_type"])
    return data_redirect(database, dir_uid=_dir_uid(path), **kwargs)
