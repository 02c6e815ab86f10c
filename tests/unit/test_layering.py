"""The layering rules of docs/design.md, checked by reading imports and calls with `ast`.

Rules:
1. Pure core modules import the standard library only (plus other pure modules) and no I/O,
   clock or process module.
2. master/ imports nothing from tlsmgr/.
3. Single owners: selectors and signal handlers only in events.py; fork/exec/wait/spawn only in
   spawn.py (fork and wait also in zygote.py, the spawn server); chroot/set*id/initgroups only
   in privs.py; berkeleydb only in dbhash.py; cryptography's ciphers only in prng.py (and the
   Redis sealing, see EXCEPTIONS); hiredis only in redisconn.py; python-daemon only in control.py;
   prometheus_client only in clients/metrics.py.
4. The client side (tlsmgr/client.py, tlsmgr/clients/) uses only attr.py and protocol.py from the
   server side; the smtpd test server may also use master/'s skeleton, never tlsmgr's stores.
5. Tests and benchmarks share one support package, tests/support (`support`, on the import path
   through setup.cfg's pythonpath and the venv's .pth file): every other file under tests/ is a
   test module or a conftest.py, nothing imports a test module, and no file under tests/ or
   bench/ edits the import path (sys.path, site.addsitedir, monkeypatch.syspath_prepend), in
   its code or in a script it writes.
6. One home per name: a module's __all__ lists only names it defines, and every name is imported
   (or reached as module.name) from the module that defines it, in master/, tlsmgr/, tests/ and
   bench/; a module may pass on names only when FACADES lists it with its reason.
7. No import cycles among the modules of master/ and tlsmgr/, counting imports inside functions
   and under TYPE_CHECKING.

Every exception is listed in EXCEPTIONS or PATH_EXCEPTIONS with its reason.  The tables below
are the rules' exact form: docs/design.md explains them, and its "Who may import whom" section
is generated from these tables by `make docs` (support.docgen reads them with ast, so they stay
literals).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PURE = {
    "tlsmgr/attr.py",
    "tlsmgr/protocol.py",
    "tlsmgr/service.py",
    "tlsmgr/tickets.py",
    "tlsmgr/keychain.py",
    "tlsmgr/params.py",
    "master/mastercf.py",
    "master/macro.py",
    "master/errors.py",
    "master/proto.py",
}
# Modules a pure module may import besides the standard library.
PURE_PROJECT_IMPORTS = {
    "tlsmgr.attr",
    "tlsmgr.protocol",
    "tlsmgr.tickets",
    "tlsmgr.keychain",
    "tlsmgr.params",
    "master.config",
    "master.macro",
    "master.errors",
    "master.proto",
    "master.mastercf",
}
# Standard-library modules that do I/O, read the clock or manage processes.
IMPURE_STDLIB = {
    "socket",
    "selectors",
    "select",
    "time",
    "subprocess",
    "threading",
    "multiprocessing",
    "signal",
    "asyncio",
    "fcntl",
    "mmap",
    "random",
    "secrets",
}

# call or attribute -> the only module allowed to use it
OWNED_CALLS = {
    "os.fork": "master/spawn.py",
    "os.forkpty": "master/spawn.py",
    "os.posix_spawn": "master/spawn.py",
    "os.posix_spawnp": "master/spawn.py",
    "os.execv": "master/spawn.py",
    "os.execve": "master/spawn.py",
    "os.execvp": "master/spawn.py",
    "os.execvpe": "master/spawn.py",
    "os.execl": "master/spawn.py",
    "os.wait": "master/spawn.py",
    "os.waitpid": "master/spawn.py",
    "os.wait3": "master/spawn.py",
    "os.wait4": "master/spawn.py",
    "os.waitid": "master/spawn.py",
    "os.chroot": "master/privs.py",
    "os.setuid": "master/privs.py",
    "os.setgid": "master/privs.py",
    "os.seteuid": "master/privs.py",
    "os.setegid": "master/privs.py",
    "os.setresuid": "master/privs.py",
    "os.setresgid": "master/privs.py",
    "os.setreuid": "master/privs.py",
    "os.setregid": "master/privs.py",
    "os.setgroups": "master/privs.py",
    "os.initgroups": "master/privs.py",
    "signal.signal": "master/events.py",
    "signal.set_wakeup_fd": "master/events.py",
}
OWNED_IMPORTS = {
    "selectors": "master/events.py",
    "berkeleydb": "tlsmgr/dbhash.py",
    "cryptography.hazmat.primitives.ciphers": "tlsmgr/prng.py",
    "hiredis": "tlsmgr/redisconn.py",
    "daemon": "master/control.py",
    "subprocess": "master/spawn.py",
    "prometheus_client": "tlsmgr/clients/metrics.py",
}

# (module, what) -> reason
EXCEPTIONS = {
    ("master/control.py", "subprocess"): "`minipostfix start` runs the master as a subprocess "
    "and waits for its readiness byte, as `postfix start` waits for `master -w`; "
    "`minipostfix logrotate` runs maillog_file_compressor, as postfix-script does",
    ("tlsmgr/sealing.py", "cryptography.hazmat.primitives.ciphers"): "the second owner of "
    "the ciphers: ChaCha20-Poly1305 seals the cache entries kept in Redis; a module of its own "
    "so that a tlsmgr without Redis never imports the AEAD",
    # Second owner: the spawn server.
    ("master/zygote.py", "os.fork"): "the spawn server forks a Python service's children from "
    "its imported image (the double fork that makes each the master's child); fork+exec stays "
    "in spawn.py",
    ("master/zygote.py", "os.waitpid"): "the spawn server reaps the intermediate process of its "
    "double fork, its own child; the master's children are reaped in spawn.py",
}

CLIENT_SIDE_ALLOWED = {"tlsmgr.attr", "tlsmgr.protocol", "tlsmgr.client", "tlsmgr.clients"}
# client-side module -> (extra project modules it may import, reason)
CLIENT_SIDE_EXTRA = {
    "tlsmgr/clients/probe.py": (
        {"master.config", "master.errors"},
        "finds tlsmgr's socket from main.cf ($queue_directory/private/$tlsmgr_service_name) "
        "with the sole main.cf parser",
    ),
    "tlsmgr/clients/metrics.py": (
        {
            "master.single_server",
            "master.skeleton",
            "master.config",
            "master.log",
            "master.instance",
            "master.statusreport",
        },
        "a daemon on the single-server skeleton, as the smtpd test server; it reads the "
        "master's state file through instance.read_state (the one reader) and shows it "
        "through the status report model",
    ),
    "tlsmgr/clients/stats.py": (
        {"master.statusreport", "master.statusview"},
        "tlsmgr's status provider: the provider contract's StatusUnavailable, and durations "
        "shown as the master's are",
    ),
}
SMTPD_EXTRA_ALLOWED = {"master"}

# (file, edit) -> reason
PATH_EXCEPTIONS = {
    ("tests/support/echo_daemon.py", "sys.path edit in a generated script"): "the master execs "
    "its children with a clean environment, so the echo daemon's script names tests/ itself",
    ("tests/process/test_control.py", "monkeypatch.syspath_prepend"): "the behaviour under test "
    "is status providers found through entry points on the import path; monkeypatch takes the "
    "temporary distribution off again",
}
# Text of a script that edits the import path: sys.path followed by a call, an index or `=`.
SCRIPT_PATH_EDIT = re.compile(r"\bsys\.path\s*(?:\.\s*(?:insert|append|extend)\b|\[|\+?=)")
PATH_MUTATORS = {"insert", "append", "extend", "remove", "pop", "clear"}


def _modules() -> list[Path]:
    return sorted(p for d in ("master", "tlsmgr") for p in (ROOT / d).rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from tlsmgr import attr` imports tlsmgr.attr, not the package as such.
            if node.module not in ("tlsmgr", "master"):
                names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _calls(tree: ast.AST) -> set[str]:
    """Dotted names of attributes such as os.fork, whether called or referenced."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            found.add(f"{node.value.id}.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module in ("os", "signal"):
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _top(name: str) -> str:
    return name.split(".")[0]


def _owned(name: str) -> str | None:
    """The key of OWNED_IMPORTS that covers module `name` (itself or a parent package)."""
    return next((m for m in OWNED_IMPORTS if name == m or name.startswith(m + ".")), None)


def _parsed() -> list[tuple[str, ast.AST]]:
    return [(_rel(p), ast.parse(p.read_text(), str(p))) for p in _modules()]


def _project(name: str) -> bool:
    return _top(name) in ("master", "tlsmgr")


def test_pure_core_imports_stdlib_only():
    problems = []
    for rel, tree in _parsed():
        if rel not in PURE:
            continue
        for name in _imports(tree):
            if _project(name):
                if not any(name == m or name.startswith(m + ".") for m in PURE_PROJECT_IMPORTS):
                    problems.append(f"{rel}: imports {name}")
            elif _top(name) in IMPURE_STDLIB or _owned(name):
                problems.append(f"{rel}: imports {name} (I/O, clock or third party)")
    assert not problems, "\n".join(problems)


def test_master_imports_nothing_from_tlsmgr():
    bad = [
        f"{rel}: imports {name}"
        for rel, tree in _parsed()
        if rel.startswith("master/")
        for name in _imports(tree)
        if _top(name) == "tlsmgr"
    ]
    assert not bad, "\n".join(bad)


def test_single_owners():
    problems = []
    for rel, tree in _parsed():
        for name in _imports(tree):
            owned = _owned(name)
            owner = OWNED_IMPORTS.get(owned or "")
            if owner and owner != rel and (rel, owned) not in EXCEPTIONS:
                problems.append(f"{rel}: imports {name} (owned by {owner})")
        for call in _calls(tree):
            owner = OWNED_CALLS.get(call)
            if owner and owner != rel and (rel, call) not in EXCEPTIONS:
                problems.append(f"{rel}: uses {call} (owned by {owner})")
    assert not problems, "\n".join(problems)


def test_client_side_uses_only_the_protocol():
    problems = []
    for rel, tree in _parsed():
        client = rel == "tlsmgr/client.py" or rel.startswith("tlsmgr/clients/")
        if not client:
            continue
        smtpd = rel == "tlsmgr/clients/smtpd.py"
        for name in _imports(tree):
            if not _project(name):
                continue
            if any(name == m or name.startswith(m + ".") for m in CLIENT_SIDE_ALLOWED):
                continue
            if name in ("tlsmgr",):
                continue
            if smtpd and _top(name) in SMTPD_EXTRA_ALLOWED:
                continue
            extra = CLIENT_SIDE_EXTRA.get(rel, (set(), ""))[0]
            if any(name == m or name.startswith(m + ".") for m in extra):
                continue
            problems.append(f"{rel}: imports {name}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("rel", sorted(PURE))
def test_pure_modules_state_their_charter(rel):
    path = ROOT / rel
    if not path.exists():
        pytest.skip(f"{rel} not written yet")
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert "No sockets, no clock" in doc, f"{rel}: docstring must state its charter"


def test_every_module_has_a_man_page_docstring():
    missing = [
        rel
        for rel, tree in _parsed()
        if not rel.endswith("__init__.py") and len(ast.get_docstring(tree) or "") < 80
    ]
    assert not missing, "modules without a man-page docstring: " + ", ".join(missing)


# Tests and bench: one support package, no import path edits ---------------------------------


def _test_side() -> list[Path]:
    return sorted(p for d in ("tests", "bench") for p in (ROOT / d).rglob("*.py"))


def _is_sys_path(node: ast.AST) -> bool:
    if isinstance(node, ast.Subscript):
        node = node.value
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    )


def _path_edits(tree: ast.AST) -> set[str]:
    """What in a module edits the import path, by kind."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if node.attr in PATH_MUTATORS and _is_sys_path(node.value):
                found.add("sys.path edit")
            elif node.attr == "addsitedir":
                found.add("site.addsitedir")
            elif node.attr == "syspath_prepend":
                found.add("monkeypatch.syspath_prepend")
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(_is_sys_path(target) for target in targets):
                found.add("sys.path edit")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if SCRIPT_PATH_EDIT.search(node.value):
                found.add("sys.path edit in a generated script")
    return found


def test_tests_and_bench_leave_the_import_path_alone():
    problems = []
    for path in _test_side():
        rel = _rel(path)
        for edit in sorted(_path_edits(ast.parse(path.read_text(), str(path)))):
            if (rel, edit) not in PATH_EXCEPTIONS:
                problems.append(f"{rel}: {edit}")
    assert not problems, "\n".join(problems)


def test_path_exceptions_are_still_needed():
    found = {
        (_rel(path), edit)
        for path in _test_side()
        for edit in _path_edits(ast.parse(path.read_text(), str(path)))
    }
    assert set(PATH_EXCEPTIONS) <= found, set(PATH_EXCEPTIONS) - found


def test_shared_helpers_live_in_support():
    support = ROOT / "tests" / "support"
    strays = [
        _rel(path)
        for path in (ROOT / "tests").rglob("*.py")
        if support not in path.parents
        and not path.name.startswith("test_")
        and path.name != "conftest.py"
    ]
    assert not strays, "helper modules outside tests/support: " + ", ".join(strays)


def test_nothing_imports_a_test_module():
    problems = [
        f"{_rel(path)}: imports {name}"
        for path in _test_side()
        for name in _imports(ast.parse(path.read_text(), str(path)))
        if _top(name).startswith("test_") or _top(name) == "conftest"
    ]
    assert not problems, "\n".join(problems)


# One home per name -------------------------------------------------------------------
#
# A module that is a public facade on purpose is listed here with its reason; it may then
# list other modules' names in its __all__, and others may import those names from it.
# None is today: tlsmgr/client.py's users take Status from tlsmgr/protocol.py, as the
# client does, so that a client's program names the vocabulary where it is defined.
FACADES: dict[str, str] = {}
# Trees whose imports of project names are checked (the project modules themselves, and
# everything that uses them).
IMPORTER_TREES = ("master", "tlsmgr", "tests", "bench")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _project_modules() -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text(), str(p)) for p in _modules()}


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements run at import time: the module body, into if/try/with/for blocks."""
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            for block in ("body", "orelse", "finalbody"):
                yield from _top_level(getattr(node, block, []))
            for handler in getattr(node, "handlers", []):
                yield from _top_level(handler.body)


def _bound_names(target: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}


def _definitions(tree: ast.Module) -> set[str]:
    """The names a module defines (imported names are not among them)."""
    defined: set[str] = set()
    for node in _top_level(tree.body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                defined |= _bound_names(target)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.For)):
            defined |= _bound_names(node.target)
    return defined


def _dunder_all(tree: ast.Module) -> list[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    return []


def _exports(name: str, tree: ast.Module) -> set[str]:
    """What `from NAME import x` may take: its own names, a facade's __all__ too."""
    defined = _definitions(tree)
    if _rel_of(name) in FACADES:
        defined |= set(_dunder_all(tree))
    return defined


def _rel_of(module: str) -> str:
    path = ROOT / Path(*module.split("."))
    return _rel(path / "__init__.py") if path.is_dir() else _rel(path.with_suffix(".py"))


def test_all_lists_only_own_names():
    problems = []
    for name, tree in _project_modules().items():
        if _rel_of(name) in FACADES:
            continue
        defined = _definitions(tree)
        foreign = [n for n in _dunder_all(tree) if n not in defined]
        if foreign:
            problems.append(f"{_rel_of(name)}: __all__ lists names defined elsewhere: {foreign}")
    assert not problems, "\n".join(problems)


def _imported_modules(tree: ast.AST, modules: set[str]) -> set[str]:
    """Project modules a file imports, anywhere in it (functions and TYPE_CHECKING too)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in modules:
                found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names} & modules
    return found


def _cycle(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """One import path from start back to itself, or None."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(graph[node]):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_no_import_cycles():
    modules = _project_modules()
    graph = {name: _imported_modules(tree, set(modules)) - {name} for name, tree in modules.items()}
    cycles = {tuple(sorted(set(c))): c for m in graph if (c := _cycle(graph, m)) is not None}
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles.values())


def _module_aliases(tree: ast.AST, modules: set[str]) -> dict[str, str]:
    """Local names bound to project modules: `from master import log`, `import a.b as c`."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname and a.name in modules:
                    aliases[a.asname] = a.name
                elif not a.asname and a.name.split(".")[0] in modules:
                    aliases[a.name.split(".")[0]] = a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                if f"{node.module}.{a.name}" in modules:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    return aliases


def _dotted(node: ast.AST) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def _foreign_uses(
    tree: ast.AST, modules: dict[str, ast.Module], exports: Callable[[str], set[str]]
) -> list[str]:
    """`from X import Y` and `X.Y` where X is a project module that does not define Y."""
    names = set(modules)
    bad: list[str] = []

    def check(module: str, name: str, line: int, how: str) -> None:
        if f"{module}.{name}" in names or name.startswith("__") or name in exports(module):
            return
        bad.append(f"line {line}: {how} ({name} is not defined in {module})")

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in names:
            for a in node.names:
                check(node.module, a.name, node.lineno, f"from {node.module} import {a.name}")
    aliases = _module_aliases(tree, names)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or isinstance(node.ctx, ast.Store):
            continue
        parts = _dotted(node)
        if parts is None or parts[0] not in aliases:
            continue
        module, rest = aliases[parts[0]], parts[1:]
        while rest and f"{module}.{rest[0]}" in names:
            module, rest = f"{module}.{rest[0]}", rest[1:]
        if len(rest) == 1:  # a.b.c visits a.b and a.b.c: check the name right after the module
            check(module, rest[0], node.lineno, ".".join(parts))
    return bad


def test_names_are_imported_from_their_home():
    modules = _project_modules()
    exports = {name: _exports(name, tree) for name, tree in modules.items()}
    problems = []
    files = sorted(p for d in IMPORTER_TREES for p in (ROOT / d).rglob("*.py"))
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        for found in _foreign_uses(tree, modules, exports.__getitem__):
            problems.append(f"{_rel(path)}: {found}")
    assert not problems, "\n".join(problems)
