"""The import direction and the CLI boundary of style.md §3/§3b, checked by scanning ``src/kuasar``
with ``ast`` (nothing is imported). Every import counts wherever it stands: at the top, inside a
function (lazy), under ``if TYPE_CHECKING:``, or as ``importlib.import_module("kuasar...")``.

Each source module belongs to one layer of :data:`LAYERS`; it may import only the layers its row
lists (its own layer only where the row lists it). A place where today's tree breaks a rule is a
named entry of :data:`ALLOWED_IMPORTS` or :data:`ALLOWED_OUTPUT` with its reason; such an entry
must still be needed (:func:`test_every_allowance_is_still_needed`), so fixing the code forces its
removal.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "kuasar"
ROOT = "kuasar"


@dataclass(frozen=True)
class Layer:
    #: Module names in the layer; each also covers its submodules (the root ``kuasar`` only itself).
    modules: tuple[str, ...]
    #: The layers its modules may import (its own name when they may import each other).
    may_import: tuple[str, ...]


_BELOW_GUEST = ("leaf", "bottom", "neutral", "wire", "proto", "protobuf", "transport", "ttrpc")

#: Bottom up. ``protobuf`` is third party, listed so each row says whether it pays for it.
LAYERS: dict[str, Layer] = {
    # Leaves: import nothing from kuasar, not even each other.
    "leaf": Layer(
        (
            "kuasar.errors",
            "kuasar.codes",
            "kuasar._text",
            "kuasar._fdio",
            "kuasar._tracing",
            "kuasar._record",
            "kuasar._subprocess",
            "kuasar._poll",
            "kuasar._signals",
            "kuasar.logtime",
            "kuasar.sandbox.state",  # the state-record format ps and the supervisor share
        ),
        (),
    ),
    "protobuf": Layer(("google.protobuf",), ("protobuf",)),
    "proto": Layer(("kuasar.proto",), ("proto", "protobuf")),  # generated stubs
    # errors, config and address at the bottom; the root package re-exports KuasarError only.
    "bottom": Layer(
        (ROOT, "kuasar.config", "kuasar.address", "kuasar._log", "kuasar.userspec", "kuasar.commandline"),
        ("leaf",),
    ),
    # Host and guest share only neutral modules (§3b): no side, no ttrpc, no protobuf.
    "neutral": Layer(
        ("kuasar.rootpath", "kuasar.tarstream", "kuasar.fscopy", "kuasar.procmounts"),
        ("leaf", "bottom", "neutral"),
    ),
    # The protobuf wire codec of the hot messages, byte-identical to the stubs, without protobuf.
    "wire": Layer(("kuasar.wire",), ("leaf", "wire")),
    # transport and ttrpc are independent of each other: ttrpc is handed a connected stream.
    "transport": Layer(("kuasar.transport",), ("leaf", "bottom", "transport")),
    "ttrpc": Layer(("kuasar.ttrpc",), ("leaf", "bottom", "wire", "proto", "protobuf", "ttrpc")),
    # Host side of the debug console: it serves guests with no agent API, so no ttrpc, no protobuf
    # (kuasarctl exec --console's fast path, issue 8 item 20).
    "console": Layer(
        ("kuasar.console", "kuasar.console_session", "kuasar.console_sync"),
        ("leaf", "bottom", "transport", "console"),
    ),
    # The host's guest session (§3b): which path reaches the guest (agent API, console) and why not.
    "guest": Layer(
        ("kuasar.guest", "kuasar.session", "kuasar.remote_process", "kuasar.remote_exec"),
        (*_BELOW_GUEST, "console", "guest"),
    ),
    # kuasarctl agent's library half: descriptors, argument composition, call plans and reports.
    "agentctl": Layer(("kuasar.agentctl",), ("leaf", "bottom", "proto", "protobuf", "agentctl")),
    # The guest agent: never the host's guest/console session, sandbox or ctl.
    "agent": Layer(("kuasar.agent",), (*_BELOW_GUEST, "agent")),
    # VMMs (§3b): the virtio-vsock device over vhost-user, launchers; the sandbox layer drives them.
    "vmm": Layer(("kuasar.vmm",), ("leaf", "bottom", "transport", "vmm")),
    # Sandbox internals only kuasar.sandbox reaches: ctl goes through discovery, local and state.
    "supervisor": Layer(
        ("kuasar.sandbox.supervisor", "kuasar.sandbox.vm_supervisor"),
        ("leaf", "bottom", "transport", "vmm", "supervisor"),
    ),
    "sandbox": Layer(
        ("kuasar.sandbox",), (*_BELOW_GUEST, "console", "guest", "supervisor", "vmm", "sandbox")
    ),
    # The CLI on top: everything except the guest agent and the sandbox internals.
    # It reaches guests only through the library's guest session (issue 9): never a transport
    # or a ttrpc connection of its own.
    "ctl": Layer(
        ("kuasar.ctl",),
        (
            "leaf",
            "bottom",
            "neutral",
            "wire",
            "proto",
            "protobuf",
            "console",
            "guest",
            "agentctl",
            "sandbox",
            "ctl",
        ),
    ),
}

#: (importer, imported) -> why today's tree may still do it. Remove an entry once the code is fixed.
ALLOWED_IMPORTS: dict[tuple[str, str], str] = {}

MAIN_GUARD = 'if __name__ == "__main__"'

#: (module, scope) -> why it may print or exit although it is not in ctl. ``scope`` is the
#: enclosing function, or ``if __name__ == "__main__"`` for that guard.
ALLOWED_OUTPUT: dict[tuple[str, str], str] = {
    # kuasar-agent is a program of its own (the guest's PID 1 or a local sandbox's child), not a
    # library: main() is its CLI boundary, like kuasar.ctl.main for kuasarctl. It writes its startup
    # failures (before logging is configured) to stderr and returns an exit code.
    ("kuasar.agent.main", "main"): "kuasar-agent's CLI boundary: one stderr line, an exit code",
    ("kuasar.agent.main", MAIN_GUARD): "python -m kuasar.agent.main: sys.exit(main())",
    ("kuasar.sandbox.supervisor", MAIN_GUARD): "the supervisor is its own process (python -m ...)",
    ("kuasar.vmm.vsock_server", MAIN_GUARD): "the vsock device is its own process (python -m ...)",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    """True when ``name`` is a module or package of src/kuasar (not an attribute of one)."""
    base = SRC.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _dynamic_name(node: ast.expr) -> str | None:
    """The module an ``import_module`` argument names: a literal, or the package an f-string's
    literal prefix names (``f"kuasar.transport.{name}"`` is some module of ``kuasar.transport``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        prefix = str(node.values[0].value)
        return prefix.rpartition(".")[0] or None
    return None


def imports(path: Path, package: str | None = None) -> list[tuple[int, str]]:
    """(line, module) for every module a file imports; ``from pkg import x`` gives ``pkg.x`` when x
    is a submodule, else ``pkg``; relative imports are resolved against ``package`` (by default
    the file's own package)."""
    if package is None:
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*parts, node.module] if node.module else parts)
            else:
                module = node.module or ""
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                found.append((node.lineno, sub if _is_module(sub) else module))
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) in {"importlib.import_module", "__import__"}
            and node.args
            and (dynamic := _dynamic_name(node.args[0])) is not None
        ):
            found.append((node.lineno, dynamic))
    return found


def layer_of(name: str) -> str | None:
    """The layer whose longest module name covers ``name``; None for stdlib and other packages."""
    best: tuple[int, str] | None = None
    for layer, spec in LAYERS.items():
        for prefix in spec.modules:
            covers = name == prefix or (prefix != ROOT and name.startswith(prefix + "."))
            if covers and (best is None or len(prefix) > best[0]):
                best = (len(prefix), layer)
    return best[1] if best else None


def _source(path: Path) -> bool:
    return not path.name.endswith("_pb2.py")


SOURCES = sorted(p for p in SRC.rglob("*.py") if _source(p))


def violations(path: Path) -> list[tuple[int, str, str]]:
    """(line, imported module, its layer) for each import the importer's layer may not make."""
    own = layer_of(module_name(path))
    allowed = LAYERS[own].may_import if own is not None else ()
    found = []
    for line, name in imports(path):
        layer = layer_of(name)
        if layer is not None and layer not in allowed:
            found.append((line, name, layer))
    return found


def test_scanner_sees_every_kind_of_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import asyncio, kuasar.errors\n"
        "from typing import TYPE_CHECKING\n"
        "from kuasar import __version__, ttrpc\n"
        "from . import namespaces\n"
        "from ..transport import unix\n"
        "if TYPE_CHECKING:\n    from kuasar.guest import Guest\n"
        "def lazy(name):\n"
        "    from google.protobuf import empty_pb2\n"
        "    import importlib\n"
        "    importlib.import_module('kuasar.sandbox.local')\n"
        "    return importlib.import_module(f'kuasar.ctl.commands.{name}')\n"
    )
    assert imports(sample, package="kuasar.agent") == [
        (1, "asyncio"),
        (1, "kuasar.errors"),
        (2, "typing"),
        (3, "kuasar"),  # an attribute of the root package
        (3, "kuasar.ttrpc"),  # a submodule
        (4, "kuasar.agent.namespaces"),
        (5, "kuasar.transport.unix"),
        (7, "kuasar.guest"),
        (9, "google.protobuf"),  # only kuasar names are resolved to submodules
        (10, "importlib"),
        (11, "kuasar.sandbox.local"),
        (12, "kuasar.ctl.commands"),
    ]


def test_the_table_classifies_as_style_md_says() -> None:
    assert layer_of("kuasar.ttrpc.codes") == "ttrpc"  # runs kuasar/ttrpc/__init__.py
    assert layer_of("kuasar.codes") == "leaf"
    assert layer_of("kuasar.sandbox.supervisor") == "supervisor"
    assert layer_of("kuasar.sandbox.discovery") == "sandbox"
    assert layer_of("kuasar.console_session") == "console"
    assert layer_of("kuasar.consolex") is None and layer_of("asyncio") is None
    assert "transport" not in LAYERS["ttrpc"].may_import
    assert "ttrpc" not in LAYERS["transport"].may_import
    assert not {"ctl", "sandbox", "supervisor"} & set(LAYERS["agent"].may_import)
    assert "agent" not in LAYERS["ctl"].may_import


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_imports_follow_the_layers(path: Path) -> None:
    importer = module_name(path)
    layer = layer_of(importer)
    assert layer is not None, f"{importer} is in no layer: add it to LAYERS (tests/unit/test_layers.py)"
    bad = [
        f"{path.relative_to(SRC.parent)}:{line}: imports {name} ({its})"
        for line, name, its in violations(path)
        if (importer, name) not in ALLOWED_IMPORTS
    ]
    assert not bad, f"{importer} ({layer}) may import only {LAYERS[layer].may_import}:\n" + "\n".join(bad)


#: Protocol cores that know bytes only (style.md §2.1, §3b): no event loop, no sockets, no protobuf.
SANS_IO_CORES = [
    SRC / "ttrpc" / "framing.py",
    SRC / "ttrpc" / "_client_core.py",
    SRC / "console.py",
    SRC / "transport" / "_handshake.py",
    *(SRC / "session" / f"{name}.py" for name in ("_probe", "_diagnose", "_vm_process")),
    SRC / "remote_exec.py",
    *sorted((SRC / "wire").glob("*.py")),
    *(
        SRC / "vmm" / f"{name}.py"
        for name in (
            "vhost_user",
            "backend",
            "virtqueue",
            "vsock_packet",
            "vsock_conn",
            "vsock_device",
            "testing",
        )
    ),
]


@pytest.mark.parametrize("core", SANS_IO_CORES, ids=lambda p: module_name(p))
def test_sans_io_cores_import_no_io(core: Path) -> None:
    io = {n for _, n in imports(core) if n.split(".")[0] in {"asyncio", "socket", "selectors", "google"}}
    assert not io, f"{module_name(core)} imports {sorted(io)}"


def _sys_names(tree: ast.Module) -> tuple[set[str], dict[str, str]]:
    """Names bound to the ``sys`` module, and names bound to ``sys.X`` by ``from sys import X``."""
    modules, members = {"sys"}, {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(a.asname or a.name for a in node.names if a.name == "sys")
        elif isinstance(node, ast.ImportFrom) and node.module == "sys" and not node.level:
            members.update({a.asname or a.name: a.name for a in node.names})
    return modules, members


def output_calls(path: Path) -> list[tuple[int, str, str]]:
    """(line, what, scope) for each print, write to sys.stdout/sys.stderr, sys.exit, exit()/quit()
    or ``raise SystemExit`` in a file. ``os._exit`` is not counted: it ends a forked child (the
    daemonising parent, the PID-1 forwarder), not a command."""
    tree = ast.parse(path.read_text(), str(path))
    sys_modules, sys_members = _sys_names(tree)

    def sys_attr(node: ast.expr) -> str | None:
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in sys_modules
        ):
            return node.attr
        if isinstance(node, ast.Name) and node.id in sys_members:
            return sys_members[node.id]
        return None

    def what(node: ast.AST) -> str | None:
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            return "raise SystemExit" if isinstance(exc, ast.Name) and exc.id == "SystemExit" else None
        if not isinstance(node, ast.Call):
            return None
        func = node.func
        if sys_attr(func) == "exit":
            return "sys.exit"
        if isinstance(func, ast.Name) and func.id in {"print", "exit", "quit"}:
            return f"{func.id}()"
        if isinstance(func, ast.Attribute) and func.attr == "write":
            stream = (
                func.value.value
                if isinstance(func.value, ast.Attribute) and func.value.attr == "buffer"
                else func.value
            )
            if sys_attr(stream) in {"stdout", "stderr"}:
                return f"sys.{sys_attr(stream)} write"
        return None

    found: list[tuple[int, str, str]] = []

    def visit(node: ast.AST, scope: str) -> None:
        kind = what(node)
        if kind is not None:
            found.append((getattr(node, "lineno", 0), kind, scope))
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, child.name if scope == "<module>" else f"{scope}.{child.name}")
            elif (
                isinstance(node, ast.Module)
                and isinstance(child, ast.If)
                and ast.unparse(child.test)
                in {
                    "__name__ == '__main__'",
                    '__name__ == "__main__"',
                }
            ):
                visit(child, MAIN_GUARD)
            else:
                visit(child, scope)

    visit(tree, "<module>")
    return found


NON_CTL_SOURCES = [p for p in SOURCES if layer_of(module_name(p)) != "ctl"]


def test_output_scanner_sees_prints_and_exits(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import sys as s\nfrom sys import exit as bye, stderr\n"
        "def f():\n    print('x')\n    s.stdout.buffer.write(b'')\n    stderr.write('')\n"
        "    class C:\n        def g(self):\n            raise SystemExit(2)\n"
        "bye(1)\nif __name__ == '__main__':\n    s.exit(f())\n"
        "import os\nos._exit(0)\nlog = s.stderr\n"
    )
    assert output_calls(sample) == [
        (4, "print()", "f"),
        (5, "sys.stdout write", "f"),
        (6, "sys.stderr write", "f"),
        (9, "raise SystemExit", "f.g"),
        (10, "sys.exit", "<module>"),
        (12, "sys.exit", MAIN_GUARD),
    ]


@pytest.mark.parametrize("path", NON_CTL_SOURCES, ids=lambda p: module_name(p))
def test_only_ctl_prints_or_exits(path: Path) -> None:
    name = module_name(path)
    bad = [
        f"{path.relative_to(SRC.parent)}:{line}: {kind} in {scope}"
        for line, kind, scope in output_calls(path)
        if (name, scope.partition(".")[0]) not in ALLOWED_OUTPUT
    ]
    assert not bad, "only kuasar.ctl prints or exits (raise a KuasarError, log, or return):\n" + "\n".join(
        bad
    )


def test_every_allowance_is_still_needed() -> None:
    by_name = {module_name(p): p for p in SOURCES}
    for importer, imported in ALLOWED_IMPORTS:
        assert imported in {n for _, n, _ in violations(by_name[importer])}, (
            f"{importer} no longer imports {imported} against the layers: remove it from ALLOWED_IMPORTS"
        )
    for module, scope in ALLOWED_OUTPUT:
        assert scope in {s.partition(".")[0] for _, _, s in output_calls(by_name[module])}, (
            f"{module} no longer prints or exits in {scope}: remove it from ALLOWED_OUTPUT"
        )
