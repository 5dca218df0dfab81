"""Host and guest share only neutral modules: ``kuasar.ctl`` never imports ``kuasar.agent``, and the
modules both use import neither side (scanned with ``ast``, nothing is imported)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_layers import SRC, imported_modules

HOST_FILES = sorted((SRC / "ctl").rglob("*.py"))
#: Modules both the host CLI and the guest agent use: they must belong to neither side.
NEUTRAL_MODULES = ("userspec", "logtime", "rootpath", "tarstream", "fscopy")
FORBIDDEN_FOR_NEUTRAL = ("kuasar.agent", "kuasar.ctl", "kuasar.sandbox", "google")


def _matching(path: Path, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        name
        for name in imported_modules(path)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    )


@pytest.mark.parametrize("path", HOST_FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_host_cli_never_imports_guest_modules(path: Path) -> None:
    bad = _matching(path, ("kuasar.agent",))
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("name", NEUTRAL_MODULES)
def test_shared_modules_are_neutral(name: str) -> None:
    bad = _matching(SRC / f"{name}.py", FORBIDDEN_FOR_NEUTRAL)
    assert not bad, f"kuasar.{name} imports {bad}"
