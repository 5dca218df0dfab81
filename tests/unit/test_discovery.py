"""Sandbox discovery: the original tool's 12 cases, plus task.vsock, roots order and confinement."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from kuasar.errors import AmbiguousSandbox, SandboxNotFound, UsageError
from kuasar.sandbox.discovery import list_sandboxes, resolve_sandbox, sandbox_roots


def make_sandbox(root: Path, sandbox_id: str, name: str = "task.socket") -> Path:
    directory = root / sandbox_id
    directory.mkdir(parents=True)
    path = directory / name
    if len(str(path)) < 100:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(path))
    else:
        path.touch()
    return directory


def ids(root: Path) -> list[str]:
    return [ref.id for ref in list_sandboxes([str(root)])]


def test_empty_directory_lists_nothing(tmp_path: Path) -> None:
    assert ids(tmp_path) == []


def test_missing_root_lists_nothing(tmp_path: Path) -> None:
    assert ids(tmp_path / "absent") == []


def test_lists_only_directories_with_a_socket(tmp_path: Path) -> None:
    make_sandbox(tmp_path, "pod-a")
    (tmp_path / "no-socket").mkdir()
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "task.sock").touch()
    assert ids(tmp_path) == ["pod-a"]


def test_listing_is_sorted(tmp_path: Path) -> None:
    for name in ["pod-c", "pod-a", "Pod-b", "10", "2"]:
        make_sandbox(tmp_path, name)
    assert ids(tmp_path) == ["10", "2", "Pod-b", "pod-a", "pod-c"]


def test_exact_match_wins_over_longer_ids(tmp_path: Path) -> None:
    make_sandbox(tmp_path, "pod-abc")
    make_sandbox(tmp_path, "pod-abc-123")
    assert resolve_sandbox("pod-abc", [str(tmp_path)]).id == "pod-abc"


def test_unique_prefix(tmp_path: Path) -> None:
    make_sandbox(tmp_path, "pod-abc-123")
    make_sandbox(tmp_path, "pod-xyz-456")
    ref = resolve_sandbox("pod-abc", [str(tmp_path)])
    assert ref.id == "pod-abc-123"
    assert ref.socket == str(tmp_path / "pod-abc-123" / "task.socket")
    assert ref.layout == "kuasarctl"


def test_multiple_matches_lists_them(tmp_path: Path) -> None:
    make_sandbox(tmp_path, "pod-abc-456")
    make_sandbox(tmp_path, "pod-abc-123")
    make_sandbox(tmp_path, "pod-xyz")
    with pytest.raises(AmbiguousSandbox) as info:
        resolve_sandbox("pod-abc", [str(tmp_path)])
    assert str(info.value) == 'Pod prefix "pod-abc" matches multiple pods:'
    assert info.value.hints == ("  pod-abc-123", "  pod-abc-456", "Please provide a more specific prefix.")
    assert info.value.exit_code == 125


def test_no_match_lists_available(tmp_path: Path) -> None:
    make_sandbox(tmp_path, "pod-b")
    make_sandbox(tmp_path, "pod-a")
    with pytest.raises(SandboxNotFound) as info:
        resolve_sandbox("x", [str(tmp_path)])
    assert str(info.value) == 'No pod found with prefix "x". Available pods:'
    assert info.value.hints == ("  pod-a", "  pod-b")


def test_none_running_names_the_roots(tmp_path: Path) -> None:
    with pytest.raises(SandboxNotFound) as info:
        resolve_sandbox("x", [str(tmp_path)])
    assert str(info.value) == f"No pods found in {tmp_path}. Please check if any pods are running."
    with pytest.raises(SandboxNotFound) as info:
        resolve_sandbox("x", [str(tmp_path / "a"), str(tmp_path / "b")])
    assert f"{tmp_path / 'a'} or {tmp_path / 'b'}" in str(info.value)


def test_single_character_prefix(tmp_path: Path) -> None:
    make_sandbox(tmp_path, "abc")
    make_sandbox(tmp_path, "xyz")
    assert resolve_sandbox("a", [str(tmp_path)]).id == "abc"


def test_numeric_prefix(tmp_path: Path) -> None:
    make_sandbox(tmp_path, "123456")
    make_sandbox(tmp_path, "789")
    assert resolve_sandbox("12", [str(tmp_path)]).id == "123456"


def test_matching_is_case_sensitive(tmp_path: Path) -> None:
    make_sandbox(tmp_path, "Pod-ABC")
    with pytest.raises(SandboxNotFound):
        resolve_sandbox("pod", [str(tmp_path)])
    assert resolve_sandbox("Pod", [str(tmp_path)]).id == "Pod-ABC"


def test_task_vsock_layout_of_kuasar_vmm(tmp_path: Path) -> None:
    make_sandbox(tmp_path, "f00d", name="task.vsock")
    ref = resolve_sandbox("f0", [str(tmp_path)])
    assert ref.socket.endswith("/f00d/task.vsock")
    assert ref.layout == "kuasar-vmm"


def test_roots_order_and_sources(tmp_path: Path) -> None:
    assert sandbox_roots("/x", {"KUASAR_SOCKET_DIR": "/y"}) == ["/x"]
    assert sandbox_roots(None, {"KUASAR_SOCKET_DIR": "/y"}) == ["/y"]
    assert sandbox_roots(None, {}) == ["/run/kuasar", "/run/kuasar-vmm"]
    assert sandbox_roots(None, {"KUASAR_SOCKET_DIR": ""}) == ["/run/kuasar", "/run/kuasar-vmm"]


def test_sandboxes_across_roots(tmp_path: Path) -> None:
    first, second = tmp_path / "kuasar", tmp_path / "kuasar-vmm"
    make_sandbox(first, "local-1")
    make_sandbox(second, "vm-1", name="task.vsock")
    roots = [str(first), str(second)]
    assert [ref.id for ref in list_sandboxes(roots)] == ["local-1", "vm-1"]
    assert resolve_sandbox("vm", roots).root == str(second)


def test_same_id_in_two_roots_is_ambiguous(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    make_sandbox(first, "pod")
    make_sandbox(second, "pod", name="task.vsock")
    with pytest.raises(AmbiguousSandbox) as info:
        resolve_sandbox("pod", [str(first), str(second)])
    assert "several roots" in str(info.value)


def test_absolute_directory_inside_a_root(tmp_path: Path) -> None:
    directory = make_sandbox(tmp_path, "pod-1")
    assert resolve_sandbox(str(directory), [str(tmp_path)]).id == "pod-1"
    dotted = str(tmp_path / "pod-1" / ".." / "pod-1")
    assert resolve_sandbox(dotted, [str(tmp_path)]).id == "pod-1"


def test_absolute_directory_outside_roots_is_refused(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    outside = make_sandbox(elsewhere, "pod-1")
    with pytest.raises(UsageError, match="not inside a sandbox root"):
        resolve_sandbox(str(outside), [str(root)])
    escape = str(root / ".." / "elsewhere" / "pod-1")
    with pytest.raises(UsageError, match="not inside a sandbox root"):
        resolve_sandbox(escape, [str(root)])
    os.symlink(outside, root / "link")
    with pytest.raises(UsageError, match="not inside a sandbox root"):
        resolve_sandbox(str(root / "link"), [str(root)])
    with pytest.raises(UsageError, match="not inside a sandbox root"):
        resolve_sandbox(str(root), [str(root)])


def test_bad_queries(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="empty sandbox ID"):
        resolve_sandbox("", [str(tmp_path)])
    with pytest.raises(UsageError, match="contains '/'"):
        resolve_sandbox("a/b", [str(tmp_path)])


def test_a_kuasarctl_sandbox_whose_vmm_took_its_socket_is_still_found(tmp_path: Path) -> None:
    """A QEMU sandbox whose QEMU died: the device removed task.socket, sandbox.json remains."""
    from kuasar.sandbox import discovery, state

    assert discovery.STATE_FILE == state.STATE_FILE
    (tmp_path / "vm-1").mkdir()
    (tmp_path / "vm-1" / "sandbox.json").write_text("{}")
    (tmp_path / "not-a-sandbox").mkdir()
    (ref,) = list_sandboxes([str(tmp_path)])
    assert (ref.id, ref.socket, ref.layout) == ("vm-1", str(tmp_path / "vm-1" / "task.socket"), "kuasarctl")
    assert resolve_sandbox("vm", [str(tmp_path)]) == ref
