"""minipostfix master: a Postfix-style process master and its child skeletons.

master/ is a framework that knows no service: the master runs daemons by exec'ing
the commands master.cf names, never by importing them (docs/design.md).
"""
