#!/usr/bin/env bash
# Run the console scripts from an installed wheel (not the checkout).
# Usage: tests/wheel_smoke.sh VENV   (run from a directory outside the checkout's packages)
set -euo pipefail
venv=$(cd "$1" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
"$venv/bin/python" - <<'PY'
import master, tlsmgr, sys
for mod in (master, tlsmgr):
    assert "site-packages" in mod.__file__, mod.__file__
print("imports from", master.__file__)
PY
"$venv/bin/minipostfix" -c "$tmp/etc" create-instance queue_directory="$tmp/queue" \
    data_directory="$tmp/data" daemon_directory="$venv/bin" maillog_file="$tmp/maillog"
test -s "$tmp/etc/main.cf" && test -s "$tmp/etc/master.cf"
grep -qx "ExecStart=$venv/bin/minipostfix -c $tmp/etc start-fg" "$tmp/etc/minipostfix.service"
"$venv/bin/minipostconf" -c "$tmp/etc" -n | grep -q "^queue_directory = $tmp/queue$"
"$venv/bin/minipostconf" -c "$tmp/etc" -M | grep -q "^tlsmgr "
"$venv/bin/minipostconf" -d tls_random_source | grep -q "dev:/dev/urandom"
"$venv/bin/tlsmgr" -V </dev/null >/dev/null 2>&1 || true   # must exist; refuses a tty/no transport
test -x "$venv/bin/tlsmgr" && test -x "$venv/bin/testsmtpd" && test -x "$venv/bin/metrics"
test -x "$venv/bin/postlogd"
"$venv/bin/python" -c "import prometheus_client, tlsmgr.clients.metrics"   # install_requires
# create-instance put the log's folder into maillog_file_prefixes; master.cf has postlogd.
"$venv/bin/minipostconf" -c "$tmp/etc" -h maillog_file_prefixes | grep -q ", $tmp\$"
"$venv/bin/minipostconf" -c "$tmp/etc" -M postlog/unix-dgram | grep -q "postlogd$"
# status --json finds tlsmgr's status provider through the wheel's entry points.
{ "$venv/bin/minipostfix" -c "$tmp/etc" status --json 2>/dev/null || true; } | "$venv/bin/python" -c '
import json, sys
report = json.load(sys.stdin)
assert report["running"] is False and "tlsmgr" in report["providers"], report'
echo "wheel smoke test passed"
