"""The configuration error family: ConfigError and its two kinds, ParamError and MacroError.

SYNOPSIS
    from master.errors import ConfigError, ParamError, MacroError, place_text

    raise ConfigError("bad value", filename="master.cf", lineno=12)
    raise ConfigError("bad numerical configuration: ...", origin="service echo: -o max_use=x")
    raise ParamError("bad time value or unit: x", "max_idle")
    raise MacroError('empty macro name: "$"', "queue_directory")
    err.message, err.filename, err.lineno, err.origin, err.located
    err.at(filename, lineno) -> ConfigError        # the same problem, at a line
    place_text(filename, lineno, origin) -> str    # "main.cf:7", "-o a=b", ...

DESCRIPTION
    No sockets, no clock, no third-party imports: every module that
    reads configuration raises these, so they live at the bottom of the
    import graph, beside nothing else.

    ConfigError is any problem with main.cf, master.cf, a -o override or
    a command line that names them.  `message` says what is wrong; where,
    when it is known, is data: `filename` and `lineno` (a line of
    main.cf or master.cf; a filename without a line is a whole file, and
    the message names it, as in `open /etc/postfix/main.cf: ...`) and
    `origin` (what set the value: `-o max_idle=x`, `master.cf:12: -o
    max_idle=x`, `service echo: -o max_idle=x`).  str() is the complete
    message, the place first:
        main.cf:7: missing '=' after attribute name: "x"
        service echo: -o max_use=x: bad numerical configuration: ...
    so a caller that knows more (the skeleton: the configuration
    directory) rewrites the place, never the text.

    ParamError is a bad value of one parameter: `what` is the problem and
    `owner` the parameter at fault (None if unknown); its message is
    `parameter OWNER: WHAT`.  A caller that knows where `owner` is
    defined turns it into a located ConfigError.  MacroError is a
    ParamError raised while expanding $name references.

SEE ALSO
    master/config.py, master/macro.py, master/mastercf.py, master/skeleton.py
"""

from __future__ import annotations


def place_text(filename: str | None = None, lineno: int = 0, origin: str | None = None) -> str:
    """`FILE:LINE`, `ORIGIN`, `FILE:LINE: ORIGIN` or "" (a file without a line is not shown)."""
    parts = [f"{filename}:{lineno}"] if filename and lineno else []
    return ": ".join([*parts, origin] if origin else parts)


class ConfigError(Exception):
    """A configuration problem: `message`, and where it is (see the module docstring)."""

    def __init__(
        self,
        message: str,
        *,
        filename: str | None = None,
        lineno: int = 0,
        origin: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.filename = filename
        self.lineno = lineno
        self.origin = origin

    def __str__(self) -> str:
        place = place_text(self.filename, self.lineno, self.origin)
        return f"{place}: {self.message}" if place else self.message

    @property
    def located(self) -> bool:
        """Whether the error names its place (a file, a line or an origin)."""
        return bool(self.filename or self.origin)

    def at(self, filename: str, lineno: int = 0) -> ConfigError:
        """The same problem at filename:lineno; any place it had stays in the text."""
        return ConfigError(str(self), filename=filename, lineno=lineno)


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
