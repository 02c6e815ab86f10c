"""main.cf value text: $name expansion, compatibility levels, typed values.

SYNOPSIS
    from master.macro import expand_macros, scan_macros, compat_level

    expand_macros(text, lookup, owner) -> str      # mac_expand, recursive
    scan_macros(text, owner) -> [names]            # mac_expand, scan mode
    compat_level(text) -> int                      # "3.6" -> comparable number
    parse_time(name, text, default_unit) / parse_int / parse_bool / split_list

DESCRIPTION
    No sockets, no clock, no third-party imports: the engine behind
    master/config.py, which reads main.cf and says where a name is
    defined.  Values come in as text and a lookup function; nothing here
    knows a file.

    Expansion (mac_parse + mac_expand, recursive): $$, $name, ${name},
    $(name), ${name?text}, ${name:text} (legacy: the rest is the text, so
    ${b?x:y} is "x:y"), ${name?{then}:{else}}, and the relational form
    ${{a} OP {b}?{t}:{f}} with OP one of == != < <= >= > (numeric when both
    sides are digits), optionally with the suffix "level" to compare
    compatibility levels.  `?` and `:` test the raw value of a name, not
    its expansion.  lookup(name) gives a name's raw value, or None when it
    is undefined (it then expands to nothing).  A reference chain that
    comes back to itself is an error naming the chain; so is nesting
    deeper than 100 levels.

    Typed values: time is strtol() then one unit letter s m h d w, the
    rest ignored (conv_time); a missing unit is the default value's unit.
    Integers are strtol() with nothing after.  Booleans are yes or no.
    Lists are separated by blanks and commas.

DIAGNOSTICS
    master/errors.py's family.  ConfigError, whose text is complete.
    ParamError and MacroError carry `what` and `owner` (the parameter at
    fault, None if unknown); callers that know where `owner` is defined
    put the place in front:
        parameter a: recursive reference: a -> b -> a
        parameter b: truncated macro reference: "${x" (missing "}")
        parameter max_idle: bad time value or unit: x (use a number and ...)
    compat_level() raises ValueError for a malformed level.

BUGS
    Postfix reports nesting beyond 100 levels only; a reference cycle is
    reported here as soon as it closes (same outcome, clearer message).
    Postfix expands the operands of a relational expression in a fresh
    context and crashes on a cycle through them; here the cycle is caught.

SEE ALSO
    src/util/mac_parse.c, mac_expand.c, src/global/mail_conf_*.c,
    conv_time.c, compat_level.c (Postfix); master/config.py, master/errors.py
"""

from __future__ import annotations

import re
from collections.abc import Callable

from master.errors import ConfigError, MacroError

# Expansion: mac_parse() + mac_expand() --------------------------------------------

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
CHARS_SPACE = " \t\r\n"  # Postfix's CHARS_SPACE: the blanks between words of a value
_MAX_LEVEL = 100  # Postfix: "unreasonable macro call nesting" beyond this
_MAX_STACK = 1000  # Sanity check: relational operands restart the level count
_OPERATOR_CHARS = "<>!=?+-*/~&|%"
_OPERATORS = ("==", "!=", "<", "<=", ">=", ">")
_OPERATOR_SUFFIXES = ("level",)

Lookup = Callable[[str], "str | None"]


def _skip_blanks(text: str, i: int = 0) -> int:
    while i < len(text) and text[i] in CHARS_SPACE:
        i += 1
    return i


class _Expander:
    """One mac_expand() call: recursive expansion, or scan mode (names only)."""

    def __init__(self, lookup: Lookup, scan: bool = False, owner: str | None = None):
        self.lookup = lookup
        self.scan = scan
        self.names: list[str] = []
        self.stack: list[str] = [owner] if owner else []
        self.level = 0
        self.out: list[str] = []

    def error(self, what: str) -> MacroError:
        return MacroError(what, self.stack[-1] if self.stack else None)

    # mac_parse(): split text into literals and macro bodies.
    def parse(self, text: str) -> None:
        literal: list[str] = []
        i, n = 0, len(text)
        while i < n:
            ch = text[i]
            if ch != "$":
                literal.append(ch)
                i += 1
                continue
            if text[i + 1 : i + 2] == "$":
                literal.append("$")
                i += 2
                continue
            if literal:
                self.literal("".join(literal))
                literal = []
            i += 1
            if i < n and text[i] in "({":
                close = ")" if text[i] == "(" else "}"
                end = _balance(text, i, text[i], close)
                if end < 0:
                    raise self.error(f'truncated macro reference: "{text}" (missing "{close}")')
                body, i = text[i + 1 : end], end + 1
            else:
                j = i
                while j < n and text[j] in _NAME_CHARS:
                    j += 1
                body, i = text[i:j], j
            if not body:
                raise self.error(f'empty macro name: "{text}" (write $$ for a literal $)')
            self.expression(body)
        if literal:
            self.literal("".join(literal))

    def enter(self, what: str) -> None:
        if self.level > _MAX_LEVEL or len(self.stack) > _MAX_STACK:
            chain = " -> ".join(self.stack[:3] + ["..."] + self.stack[-2:])
            raise MacroError(
                f'unreasonable macro call nesting (deeper than {_MAX_LEVEL}) at "{what}": {chain}',
                self.stack[0] if self.stack else None,
            )
        self.level += 1

    def literal(self, text: str) -> None:
        self.enter(text)
        if not self.scan:
            self.out.append(text)
        self.level -= 1

    # mac_expand_callback() for one ${...}, $(...) or $name body.
    def expression(self, body: str) -> None:
        self.enter(body)
        start = _skip_blanks(body)
        if body[start : start + 1] == "{":
            value, rest = self.relational(body[start:])
            op = rest[:1]
            if op and op not in "?:":
                raise self.error(f'"?" or ":" expected at: "...}}>>>{rest[:20]}"')
            rest = rest[1:]
            name = None
        else:
            name, op, rest = self.name_and_operator(body, start)
            value = self.lookup_name(name)
        if op == "?":
            rest = self.branch(rest, bool(value), ":")
            if rest:
                op, rest = ":", rest[1:]
        if op == ":":
            self.branch(rest, not value, "")
        elif not op and value and not self.scan:
            self.recurse(name, value)
        self.level -= 1

    def name_and_operator(self, body: str, start: int) -> tuple[str, str, str]:
        i = start
        while True:
            after = _skip_blanks(body, i)
            if after == len(body):
                return body[start:i], "", ""
            if body[after] in "?:":
                return body[start:i], body[after], body[after + 1 :]
            if body[i] not in _NAME_CHARS:
                raise self.error(
                    f'attribute name syntax error at: "...{body[:i]}>>>{body[i : i + 20]}"'
                )
            i += 1

    def branch(self, text: str, taken: bool, allowed_next: str) -> str:
        """Parse one ?/: operand; return what follows it (must be allowed_next)."""
        start = _skip_blanks(text)
        if text[start : start + 1] == "{":
            payload, rest = self.curly(text[start:])
        else:
            payload, rest = text, ""
        if taken or self.scan:
            self.parse(payload)
        if rest and not rest.startswith(allowed_next or "\0"):
            expected = f'"{allowed_next}" expected' if allowed_next else "unexpected input"
            raise self.error(f'{expected} at: "...{payload}}}>>>{rest[:20]}"')
        return rest

    def curly(self, text: str) -> tuple[str, str]:
        end = _balance(text, 0, "{", "}")
        if end < 0:
            raise self.error(f'unbalanced {{}} in attribute expression: "{text}"')
        return text[1:end], text[_skip_blanks(text, end + 1) :]

    def lookup_name(self, name: str) -> str | None:
        if self.scan:
            if name:
                self.names.append(name)
            return None
        return self.lookup(name) if name else None

    def recurse(self, name: str | None, value: str) -> None:
        if name is None:  # the "true" of a relational expression
            self.parse(value)
            return
        if name in self.stack:
            chain = self.stack[self.stack.index(name) :] + [name]
            raise MacroError(f"recursive reference: {' -> '.join(chain)}", name)
        self.stack.append(name)
        self.parse(value)
        self.stack.pop()

    def relational(self, text: str) -> tuple[str | None, str]:
        left, rest = self.curly(text)
        op_len = len(rest) - len(rest.lstrip(_OPERATOR_CHARS))
        op, rest = rest[:op_len], rest[op_len:]
        if op not in _OPERATORS:
            raise self.error(
                f'"==", "!=", "<", "<=", ">=" or ">" expected at: "...{{{left}}}>>>{op}{rest[:20]}"'
            )
        suffix = re.match(r"[A-Za-z0-9]*", rest).group(0)  # type: ignore[union-attr]  # "x*" always matches
        if suffix and suffix not in _OPERATOR_SUFFIXES:
            raise self.error(f'bad operator suffix at: "...{op}>>>{suffix}" (only "level")')
        rest = rest[len(suffix) :]
        start = _skip_blanks(rest)
        if rest[start : start + 1] != "{":
            raise self.error(f'"{{expression}}" expected at: "...{{{left}}} {op}>>>{rest[:20]}"')
        right, rest = self.curly(rest[start:])
        left_value, right_value = self.operand(left), self.operand(right)
        if self.scan:
            return None, rest
        try:
            true = _compare(left_value, op, right_value, suffix)
        except ValueError as err:
            raise self.error(str(err)) from None
        return ("true" if true else ""), rest

    def operand(self, text: str) -> str:
        """Expand a relational operand in a fresh context, as Postfix does."""
        saved_out, saved_level = self.out, self.level
        self.out, self.level = [], 0
        try:
            self.parse(text)
            return "".join(self.out)
        finally:
            self.out, self.level = saved_out, saved_level


def _balance(text: str, start: int, open_: str, close: str) -> int:
    """Index of the bracket closing text[start], counting only open_/close; -1 if none."""
    level = 0
    for j in range(start, len(text)):
        if text[j] == open_:
            level += 1
        elif text[j] == close:
            level -= 1
            if level == 0:
                return j
    return -1


def _compare(left: str, op: str, right: str, suffix: str) -> bool:
    if suffix == "level":
        delta = compat_level(left) - compat_level(right)
    elif left.isdigit() and right.isdigit() and left.isascii() and right.isascii():
        lval, rval = int(left), int(right)
        if max(lval, rval) > 2**63 - 1:
            raise ValueError(f"bad numerical comparison: {max(lval, rval)} is too large")
        delta = lval - rval
    else:
        lb, rb = left.encode("utf-8", "surrogateescape"), right.encode("utf-8", "surrogateescape")
        delta = (lb > rb) - (lb < rb)
    return {
        "==": delta == 0,
        "!=": delta != 0,
        "<": delta < 0,
        "<=": delta <= 0,
        ">=": delta >= 0,
        ">": delta > 0,
    }[op]


def expand_macros(text: str, lookup: Lookup, owner: str | None = None) -> str:
    """Expand text recursively; lookup(name) gives a raw value or None (undefined).

    `owner` names the parameter whose value `text` is: it starts the
    recursion chain and is blamed for syntax errors in `text`.  Raises
    MacroError (a ConfigError) whose `owner` is the parameter at fault.
    """
    expander = _Expander(lookup, owner=owner)
    expander.parse(text)
    return "".join(expander.out)


def scan_macros(text: str, owner: str | None = None) -> list[str]:
    """The names text refers to, in every branch (MAC_EXP_FLAG_SCAN); MacroError on syntax."""
    expander = _Expander(lambda _name: None, scan=True, owner=owner)
    expander.parse(text)
    return expander.names


def _strtol_prefix(text: str) -> tuple[int | None, str]:
    """strtol(text, &end, 10): (value or None when no digits, rest)."""
    m = re.match(r"[ \t\n\r\v\f]*([+-]?\d+)", text)
    if not m or not m.group(1).lstrip("+-").isascii():
        return None, text
    return int(m.group(1)), text[m.end() :]


def compat_level(text: str) -> int:
    """compat_level_from_string(): "major[.minor[.patch]]" as one comparable number."""
    parts = text.split(".")
    numbers: list[int] = []
    for part, limit in zip(parts, (2**43 - 1, 1023, 1023), strict=False):
        number, rest = _strtol_prefix(part)
        if number is None or rest or not 0 <= number <= limit:
            break
        numbers.append(number)
    if len(parts) > 3 or len(numbers) != len(parts):
        raise ValueError(f'malformed compatibility level syntax: "{text}"')
    numbers += [0] * (3 - len(numbers))
    return (numbers[0] << 20) | (numbers[1] << 10) | numbers[2]


# Typed values ----------------------------------------------------------------------

_TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_INT_MAX = 2**31 - 1
_LONG_MAX = 2**63 - 1


def parse_time(name: str, text: str, default_unit: str = "s") -> int:
    """conv_time(): strtol, then one unit letter s m h d w (anything after it ignored).

    No letter means default_unit.  Negative values, overflow, an empty
    value or an unknown unit raise ConfigError `parameter NAME: bad time
    value or unit: TEXT`.
    """
    number, rest = _strtol_prefix(text)
    unit = rest[:1] or default_unit
    if number is None or number < 0 or unit not in _TIME_UNITS:
        raise ConfigError(
            f"parameter {name}: bad time value or unit: {text} (use a number and one of "
            "s, m, h, d, w)"
        )
    seconds = number * _TIME_UNITS[unit]
    if number > _INT_MAX or seconds > _INT_MAX:
        raise ConfigError(f"parameter {name}: bad time value or unit: {text} (too large)")
    return seconds


def parse_int(name: str, text: str, long: bool = False) -> int:
    """get_mail_conf_int(): strtol with nothing after it, within int (or long) range."""
    number, rest = _strtol_prefix(text)
    limit = _LONG_MAX if long else _INT_MAX
    if number is None or rest or not -limit - 1 <= number <= limit:
        raise ConfigError(f"bad numerical configuration: {name} = {text} (expected an integer)")
    return number


def parse_bool(name: str, text: str) -> bool:
    """get_mail_conf_bool(): yes or no, in any case."""
    if text.lower() == "yes":
        return True
    if text.lower() == "no":
        return False
    raise ConfigError(f"bad boolean configuration: {name} = {text} (use yes or no)")


def split_list(text: str) -> list[str]:
    """Blank- and comma-separated words (CHARS_COMMA_SP)."""
    return [w for w in re.split(r"[\s,]+", text) if w]
