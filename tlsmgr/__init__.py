"""tlsmgr: the TLS session cache and PRNG manager, a service run by the master."""
