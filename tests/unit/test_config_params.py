"""Param rows against Postfix 3.7.11's built-in table (master/postfix_defaults.txt)."""

from __future__ import annotations

import pytest

from master.builtin import builtin_defaults
from master.config import MASTER_PARAMS, Config
from tlsmgr.params import PARAMS as TLSMGR_PARAMS

# Rows whose default deliberately differs from Postfix's text, with the reason.
DIFFERENT = {
    "myhostname": "computed on the host; the row's empty text is never used",
}
# Rows that are minipostfix's own (no Postfix parameter of that name).
OURS = {
    "tls_session_cache_max_entries",
    "tls_session_cache_size_limit",
    "tls_session_ticket_secret_file",
    "tls_session_cache_redis",
    "tls_session_cache_redis_read_budget",
}
TYPES = {"str", "int", "long", "time", "bool", "list"}


@pytest.mark.parametrize("row", (*MASTER_PARAMS, *TLSMGR_PARAMS), ids=lambda row: row.name)
def test_row_defaults_are_postfix_defaults(row):
    builtin = builtin_defaults()
    assert row.type in TYPES
    if row.name in OURS:
        assert row.name not in builtin.values
    elif row.name not in DIFFERENT:
        assert builtin.values[row.name] == row.default


@pytest.mark.parametrize("row", (*MASTER_PARAMS, *TLSMGR_PARAMS), ids=lambda row: row.name)
def test_a_row_is_marked_ours_exactly_when_postfix_lacks_the_name(row):
    # docs/configuration.md's generated tables show the mark as "minipostfix's own".
    assert row.doc.startswith("minipostfix: ") == (row.name not in builtin_defaults().values)


@pytest.mark.parametrize("row", (*MASTER_PARAMS, *TLSMGR_PARAMS), ids=lambda row: row.name)
def test_every_default_reads_without_error(row):
    config = Config({}, TLSMGR_PARAMS)
    getter = {"int": config.get_int, "long": config.get_int, "time": config.get_time}
    getter |= {"bool": config.get_bool, "list": config.get_list}
    value = getter.get(row.type, config.get)(row.name)
    assert value is not None


def test_master_params_cover_what_the_master_and_skeletons_read():
    names = {row.name for row in MASTER_PARAMS}
    required = {
        "config_directory", "queue_directory", "data_directory", "daemon_directory",
        "mail_owner", "setgid_group", "default_process_limit", "max_idle", "max_use",
        "service_throttle_time", "daemon_timeout", "ipc_timeout", "ipc_idle", "ipc_ttl",
        "syslog_name", "syslog_facility", "maillog_file", "import_environment",
        "inet_interfaces", "inet_protocols", "compatibility_level", "master_service_disable",
    }  # fmt: skip
    assert required <= names


def test_builtin_table_shape():
    builtin = builtin_defaults()
    assert len(builtin.values) == 844  # 831 listed by postconf -d, 13 legacy
    assert builtin.values["mail_version"] == "3.7.11"
    assert {"myhostname", "mydomain", "mynetworks", "process_id"} <= builtin.computed
    assert "forward_path" in builtin.raw and "virtual_maps" in builtin.legacy
    services = builtin.service_parameters([("relay", "smtp"), ("maildrop", "pipe"), ("x", "y")])
    assert services["relay_destination_concurrency_limit"] == (
        "$default_destination_concurrency_limit"
    )
    assert services["maildrop_time_limit"] == "$command_time_limit"
    assert "relay_time_limit" not in services and not any(n.startswith("x_") for n in services)
    # local_destination_concurrency_limit is a built-in with its own default
    assert "local_destination_concurrency_limit" not in builtin.service_parameters(
        [("local", "local")]
    )
