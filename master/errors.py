"""The configuration error family: ConfigError and its two kinds, ParamError and MacroError.

SYNOPSIS
    from master.errors import ConfigError, ParamError, MacroError

    raise ConfigError("open /etc/postfix/main.cf: No such file or directory")
    raise ParamError("bad time value or unit: x", "max_idle")
    raise MacroError('empty macro name: "$"', "queue_directory")

DESCRIPTION
    No sockets, no clock, no third-party imports: every module that
    reads configuration raises these, so they live at the bottom of the
    import graph, beside nothing else.

    ConfigError is any problem with main.cf, master.cf, a -o override or
    a command line that names them; str() is the complete message, ready
    for `fatal: ...`.  ParamError is a bad value of one parameter: `what`
    is the problem and `owner` the parameter at fault (None if unknown);
    a caller that knows where `owner` is defined turns it into a located
    ConfigError (`main.cf:7: parameter a: ...`).  MacroError is a
    ParamError raised while expanding $name references.

SEE ALSO
    master/config.py, master/macro.py, master/mastercf.py
"""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration problem; str() is the complete message."""


class ParamError(ConfigError):
    """A bad parameter value: `owner` names the parameter at fault (None if unknown).

    Callers that know where `owner` is defined turn it into a located
    ConfigError (`main.cf:7: parameter a: ...`).
    """

    def __init__(self, what: str, owner: str | None) -> None:
        super().__init__(f"parameter {owner}: {what}" if owner else what)
        self.what = what
        self.owner = owner


class MacroError(ParamError):
    """A $name expansion problem in the value of `owner`."""
