"""Sandbox discovery: which roots to search, which sandboxes they hold, and which one an ID means.

Layer contract: host side, filesystem only (``os.scandir``/``os.stat``); no sockets, no asyncio, no
protobuf — ``kuasarctl exec`` resolves a sandbox before anything else. Imports ``kuasar.errors`` only.

Rules (design.md "Sandbox roots and resolution"):
- roots: ``-d DIR`` > ``$KUASAR_SOCKET_DIR`` > both ``/run/kuasar`` and ``/run/kuasar-vmm``;
- a sandbox is a directory in a root holding ``task.socket`` (kuasarctl layout) or ``task.vsock``
  (Kuasar vmm-sandboxer layout);
- exact ID > unique prefix > ambiguous (lists all matches) > none (lists every sandbox, or says none
  run and names the roots); case-sensitive; listings sorted;
- an absolute directory is accepted only when, symlinks and ``..`` resolved, it lies inside a root.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kuasar.errors import AmbiguousSandbox, SandboxNotFound, UsageError

DEFAULT_ROOTS = ("/run/kuasar", "/run/kuasar-vmm")
SOCKET_DIR_ENV = "KUASAR_SOCKET_DIR"
#: Socket names, in the order they are preferred when a directory holds both.
SOCKET_NAMES = ("task.socket", "task.vsock")


@dataclass(frozen=True, slots=True)
class SandboxRef:
    """One sandbox found on disk.

    Attributes:
        id: the directory name.
        root: the root it was found in.
        directory: ``root/id``.
        socket: the hybrid vsock socket inside it.
        layout: ``"kuasarctl"`` for ``task.socket``, ``"kuasar-vmm"`` for ``task.vsock``.
    """

    id: str
    root: str
    directory: str
    socket: str
    layout: str


def sandbox_roots(socket_dir: str | None = None, environ: Mapping[str, str] | None = None) -> list[str]:
    """The roots to search, first that applies: ``socket_dir``, ``$KUASAR_SOCKET_DIR``, the defaults."""
    if socket_dir:
        return [socket_dir]
    env = os.environ if environ is None else environ
    from_env = env.get(SOCKET_DIR_ENV, "")
    if from_env:
        return [from_env]
    return list(DEFAULT_ROOTS)


def _socket_in(directory: str) -> tuple[str, str] | None:
    for name in SOCKET_NAMES:
        candidate = os.path.join(directory, name)
        if os.path.lexists(candidate):
            return candidate, "kuasarctl" if name == "task.socket" else "kuasar-vmm"
    return None


def _ref_for(root: str, sandbox_id: str) -> SandboxRef | None:
    directory = os.path.join(root, sandbox_id)
    found = _socket_in(directory)
    if found is None:
        return None
    return SandboxRef(sandbox_id, root, directory, found[0], found[1])


def list_sandboxes(roots: Sequence[str]) -> list[SandboxRef]:
    """Every sandbox in ``roots``, sorted by ID (then by root order). Missing roots are skipped."""
    found: list[tuple[str, int, SandboxRef]] = []
    for order, root in enumerate(roots):
        try:
            entries = list(os.scandir(root))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                continue
            ref = _ref_for(root, entry.name)
            if ref is not None:
                found.append((ref.id, order, ref))
    found.sort(key=lambda item: (item[0], item[1]))
    return [ref for _, _, ref in found]


def _roots_text(roots: Sequence[str]) -> str:
    return " or ".join(roots)


def _resolve_directory(path: str, roots: Sequence[str]) -> SandboxRef:
    real = os.path.realpath(path)
    for root in roots:
        real_root = os.path.realpath(root)
        parent = os.path.dirname(real)
        if parent == real_root and real != real_root:
            ref = _ref_for(root, os.path.basename(real))
            if ref is None:
                raise SandboxNotFound(
                    f"No sandbox socket in {path}: expected {' or '.join(SOCKET_NAMES)}",
                    hints=["Please check if the pod is running."],
                )
            return ref
    raise UsageError(
        f"Sandbox directory {path} is not inside a sandbox root ({_roots_text(roots)})",
        hints=["Pass the sandbox ID, or point -d/--socket-dir at the directory that holds it."],
    )


def resolve_sandbox(query: str, roots: Sequence[str]) -> SandboxRef:
    """The one sandbox ``query`` (ID, unique prefix, or absolute sandbox directory) names.

    Raises:
        SandboxNotFound: nothing matches (the message lists what exists).
        AmbiguousSandbox: the prefix matches several sandboxes (the message lists them).
        UsageError: empty query, or an absolute path outside every root.
    """
    if not query:
        raise UsageError("empty sandbox ID", hints=["Run 'kuasarctl ps' to list sandboxes."])
    if os.path.isabs(query):
        return _resolve_directory(query, roots)
    if "/" in query:
        raise UsageError(f"invalid sandbox ID {query!r}: it contains '/'")
    sandboxes = list_sandboxes(roots)
    exact = [ref for ref in sandboxes if ref.id == query]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        raise AmbiguousSandbox(
            f'Pod ID "{query}" exists in several roots:',
            matches=[ref.directory for ref in exact],
            hints=[*(f"  {ref.directory}" for ref in exact), "Pass -d/--socket-dir to pick one."],
        )
    matches = [ref for ref in sandboxes if ref.id.startswith(query)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        ids = [ref.id for ref in matches]
        raise AmbiguousSandbox(
            f'Pod prefix "{query}" matches multiple pods:',
            matches=ids,
            hints=[*(f"  {sandbox_id}" for sandbox_id in ids), "Please provide a more specific prefix."],
        )
    if not sandboxes:
        raise SandboxNotFound(f"No pods found in {_roots_text(roots)}. Please check if any pods are running.")
    raise SandboxNotFound(
        f'No pod found with prefix "{query}". Available pods:',
        hints=[f"  {ref.id}" for ref in sandboxes],
    )
