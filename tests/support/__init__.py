"""Support for the tests and the benchmarks: one home for every helper they share.

Importable as `support`: pytest puts tests/ on sys.path through setup.cfg's
`pythonpath`, and `make setup` puts it on the venv's path (a .pth file) for
bench/ and for programs the tests start.  Each module is one concept:

    instance            private instances: our master, Postfix's master, none (the lab)
    testd               the stdlib test daemon that speaks the master's contract itself
    echo_daemon         the echo daemon on the project's skeleton, and its script
    fake_master         a fake master that spawns one child as Postfix's master does
    lab                 the skeleton tests' lab: instances, fake masters, cleanup
    procs               processes as /proc shows them, and stopping them
    load                a closed loop of one-request connections, the load of reload tests
    waiting             wait_until() and WAIT, the hang guard
    sockets             free_port(), connectable() and the recv_*() readers
    attrs               attribute lists on the test side: request(), read_reply(), ask()
    wire_cases          the tlsmgr wire cases, ours and Postfix 3.7.11's replies
    tlsmgr_server       a test-only tlsmgr server process for the client and wire tests
    stand_ins           Log, Conn and Rand for unit tests of tlsmgr modules
    caches              a real session cache in a test's folder, and what its file holds
    disks               small tmpfs file systems to fill for real
    prng_reference      a pure-Python ChaCha20 and the pool's construction
    keychain_reference  the shared ticket key chain, computed independently
    secret_files        ticket secret files with given bytes and mode
    config_corpus       the main.cf and master.cf corpus and its expected errors
    postfix             Debian's Postfix as the oracle: SBIN, settled(), postmap_list()
    postconf_diff       postconf against minipostconf (in process), normalised
    docgen              the generated sections of docs/ (make docs), and their staleness
    redis_server        Debian's redis-server on a unix socket or loopback port, always stopped

Fixtures stay in the conftest.py files and build on these modules.
"""
