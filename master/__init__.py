"""minipostfix master: a Postfix-style process master and its child skeletons.

See ARCHITECTURE.md: master/ is a framework that knows no service.
"""
