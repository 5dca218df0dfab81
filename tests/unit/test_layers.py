"""Import-direction rules, checked by scanning the source with ``ast`` (nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "kuasar"


def imported_modules(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports resolved against its package)."""
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


TTRPC_FILES = sorted((SRC / "ttrpc").rglob("*.py"))
FORBIDDEN_FOR_TTRPC = ("kuasar.transport", "kuasar.agent", "kuasar.ctl", "kuasar.sandbox")


def test_scanner_sees_imports(tmp_path: Path) -> None:
    assert "asyncio" in imported_modules(SRC / "ttrpc" / "client.py")
    assert "kuasar.errors" in imported_modules(SRC / "ttrpc" / "framing.py")


@pytest.mark.parametrize("path", TTRPC_FILES, ids=lambda p: p.name)
def test_ttrpc_imports_no_upper_layer(path: Path) -> None:
    bad = sorted(
        name
        for name in imported_modules(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN_FOR_TTRPC)
    )
    assert not bad, f"{path.name} imports {bad}"


def test_framing_is_sans_io() -> None:
    names = imported_modules(SRC / "ttrpc" / "framing.py")
    assert not {n for n in names if n.split(".")[0] in {"asyncio", "socket", "selectors"}}
    assert not {n for n in names if n.startswith("google")}


CTL_FILES = sorted((SRC / "ctl").rglob("*.py"))


@pytest.mark.parametrize("path", CTL_FILES, ids=lambda p: str(p.relative_to(SRC / "ctl")))
def test_ctl_reads_sandbox_state_through_public_modules(path: Path) -> None:
    """``kuasarctl`` reaches local sandboxes through discovery, local and state, never the supervisor."""
    bad = sorted(name for name in imported_modules(path) if name.startswith("kuasar.sandbox.supervisor"))
    assert not bad, f"{path.name} imports {bad}"


BOTTOM_FILES = [SRC / "errors.py", SRC / "_text.py", SRC / "sandbox" / "state.py"]


@pytest.mark.parametrize("path", BOTTOM_FILES, ids=lambda p: p.name)
def test_bottom_modules_import_nothing_from_kuasar(path: Path) -> None:
    bad = sorted(name for name in imported_modules(path) if name == "kuasar" or name.startswith("kuasar."))
    assert not bad, f"{path.name} imports {bad}"
