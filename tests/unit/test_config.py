"""``kuasar.config.Limits``: one validated home for every bound, and no wait in ``src`` bounded by a
bare number instead of a limit (scanned with ``ast``, nothing is imported)."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest

from kuasar.config import DEFAULT_LIMITS, TEST_LIMITS, TTRPC_MAX_MESSAGE, Limits
from kuasar.errors import UsageError

SRC = Path(__file__).resolve().parents[2] / "src" / "kuasar"
KINDS = Limits.__annotations__
SIZES = [name for name in Limits.field_names() if KINDS[name] == "int"]
WAITS = [name for name in Limits.field_names() if KINDS[name] == "float"]


def test_the_profiles_are_valid_and_every_field_is_a_size_or_a_wait() -> None:
    assert sorted(SIZES + WAITS) == sorted(Limits.field_names())
    for limits in (DEFAULT_LIMITS, TEST_LIMITS):
        assert Limits(**limits.as_dict()) == limits
    with pytest.raises(AttributeError, match="frozen"):
        DEFAULT_LIMITS.kill_timeout = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("name", WAITS)
@pytest.mark.parametrize("value", [0, -1.0, math.nan, math.inf, True, "1"])
def test_a_wait_must_be_a_positive_finite_number(name: str, value: object) -> None:
    with pytest.raises(UsageError, match=name):
        DEFAULT_LIMITS.replace(**{name: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("name", SIZES)
@pytest.mark.parametrize("value", [0, -5, 1.5, math.nan, True])
def test_a_size_must_be_a_positive_integer(name: str, value: object) -> None:
    with pytest.raises(UsageError, match=name):
        DEFAULT_LIMITS.replace(**{name: value})  # type: ignore[arg-type]


def test_sizes_the_wire_needs() -> None:
    with pytest.raises(UsageError, match="max_message"):
        DEFAULT_LIMITS.replace(max_message=TTRPC_MAX_MESSAGE + 1)
    with pytest.raises(UsageError, match="handshake_line"):
        DEFAULT_LIMITS.replace(handshake_line=len(b"CONNECT 4294967295\n") - 1)
    with pytest.raises(UsageError, match="console_header"):
        DEFAULT_LIMITS.replace(console_header=len(b"KSR_MODE exec\n") - 1)
    assert (
        DEFAULT_LIMITS.replace(console_header=14, handshake_line=19, kill_timeout=0.01).kill_timeout == 0.01
    )


#: Calls whose bound is a wait: ``(function name, position of the bound, keyword of the bound)``.
BOUNDED_CALLS = {"timeout": (0, None), "wait_for": (1, "timeout"), "wait": (None, "timeout")}


def bare_number_bounds(path: Path) -> list[str]:
    """``asyncio.timeout(5)``, ``wait_for(x, 5.0)``, ``asyncio.wait(fs, timeout=2)`` and the like."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        if not (isinstance(node.func.value, ast.Name) and node.func.value.id == "asyncio"):
            continue
        position, keyword = BOUNDED_CALLS.get(node.func.attr, (None, None))
        bounds = [kw.value for kw in node.keywords if keyword is not None and kw.arg == keyword]
        if position is not None and len(node.args) > position:
            bounds.append(node.args[position])
        if any(isinstance(b, ast.Constant) and isinstance(b.value, (int, float)) for b in bounds):
            found.append(f"{path.relative_to(SRC)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_wait_in_src_is_bounded_by_a_bare_number() -> None:
    found = [hit for path in sorted(SRC.rglob("*.py")) for hit in bare_number_bounds(path)]
    assert found == [], "take the bound from kuasar.config.Limits:\n" + "\n".join(found)
