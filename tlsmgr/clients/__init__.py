"""Clients built on tlsmgr.client: the probe, the smtp test client, the smtpd test server."""
