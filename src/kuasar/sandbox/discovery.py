"""Sandbox discovery: which roots to search, which sandboxes they hold, and which one an ID means.

Layer contract: host side, filesystem only (``os.scandir``/``os.stat``); no sockets, no asyncio, no
protobuf — ``kuasarctl exec`` resolves a sandbox before anything else. Imports ``kuasar.errors``,
``kuasar._text`` and ``kuasar._record`` only; every ID, prefix and path in a message is escaped
with ``printable``.

Rules (design.md "Sandbox roots and resolution"):
- roots: ``-d DIR`` > ``$KUASAR_SOCKET_DIR`` > both ``/run/kuasar`` and ``/run/kuasar-vmm``;
- a sandbox is a directory in a root holding ``task.socket`` (kuasarctl layout) or ``task.vsock``
  (Kuasar vmm-sandboxer layout), or kuasarctl's ``sandbox.json`` (a sandbox whose VMM died and took its
  socket with it: ``ps`` still shows it, ``stop`` still cleans it up);
- exact ID > unique prefix > ambiguous (lists all matches) > none (lists every sandbox, or says none
  run and names the roots); case-sensitive; listings sorted;
- an absolute directory is accepted only when, symlinks and ``..`` resolved, it lies inside a root;
- a root given with ``-d``/``$KUASAR_SOCKET_DIR`` must exist (``no such directory: DIR``); of the two
  defaults, missing ones are skipped; a root or sandbox directory this user may not read is
  ``permission denied ... (run as root / sudo)``, never a silent "No pods found".
"""

from __future__ import annotations

import os

from kuasar._record import Record
from kuasar._text import printable
from kuasar.errors import AmbiguousSandbox, SandboxError, SandboxNotFound, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

DEFAULT_ROOTS = ("/run/kuasar", "/run/kuasar-vmm")
SOCKET_DIR_ENV = "KUASAR_SOCKET_DIR"
#: Socket names, in the order they are preferred when a directory holds both.
SOCKET_NAMES = ("task.socket", "task.vsock")
#: kuasar.sandbox.state.STATE_FILE, spelled out: importing that module (json, dataclasses) would cost
#: every ``kuasarctl exec`` ~15 ms (a unit test holds the two equal).
STATE_FILE = "sandbox.json"


class SandboxRef(Record):
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
    """The sandbox socket in ``directory``, or None. Raises ``PermissionError`` if it may not be read."""
    for name in SOCKET_NAMES:
        candidate = f"{directory}/{name}"  # os.path.join's result: ``directory`` never ends in "/"
        try:
            os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            continue
        return candidate, "kuasarctl" if name == "task.socket" else "kuasar-vmm"
    try:  # a sandbox kuasarctl started whose VMM died and took its socket along (QEMU's device)
        os.lstat(f"{directory}/{STATE_FILE}")
    except (FileNotFoundError, NotADirectoryError):
        return None
    return f"{directory}/{SOCKET_NAMES[0]}", "kuasarctl"


def _ref_for(root: str, sandbox_id: str) -> SandboxRef | None:
    directory = os.path.join(root, sandbox_id)
    found = _socket_in(directory)
    if found is None:
        return None
    return SandboxRef(sandbox_id, root, directory, found[0], found[1])


def permission_denied(paths: Sequence[str]) -> SandboxError:
    """The error for sandbox roots or directories this user may not read (the real layout is root's)."""
    first = printable(paths[0])
    more = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
    return SandboxError(
        f"permission denied: cannot read {first}{more} (run as root / sudo)",
        hints=[f"  {printable(path)}" for path in paths[1:]],
    )


class Scan(Record):
    """What one look through the roots found.

    Attributes:
        roots: the roots searched, in order.
        sandboxes: every sandbox found, sorted by ID (then by root order).
        missing: ``(root, reason)`` for each root that does not exist or is not a directory.
        unreadable: roots and sandbox directories this user may not read (each might hold a sandbox).
    """

    roots: tuple[str, ...]
    sandboxes: tuple[SandboxRef, ...]
    missing: tuple[tuple[str, str], ...]
    unreadable: tuple[str, ...]

    def check_roots(self) -> None:
        """Raise when the one root given (``-d DIR`` or ``$KUASAR_SOCKET_DIR``) is not a directory.

        Of the two default roots, a missing one is normal (a host without that kind of sandbox);
        when both are missing the caller reports "No pods found in ...", as the original tool did.

        Raises:
            SandboxError: ``no such directory: DIR`` or ``not a directory: DIR``.
        """
        if len(self.roots) == 1 and self.missing:
            root, reason = self.missing[0]
            raise SandboxError(
                f"{reason}: {printable(root)}",
                hints=["Check -d/--socket-dir or $KUASAR_SOCKET_DIR (the sandbox root to search)."],
            )

    def permission_error(self, names: Sequence[str] | None = None) -> SandboxError | None:
        """The permission error for the unreadable entries (only those that may be ``names``), if any.

        Args:
            names: when given, only unreadable roots and the unreadable sandbox directories whose name
                is in ``names`` count.
        """
        denied = [
            path
            for path in self.unreadable
            if names is None or path in self.roots or os.path.basename(path) in names
        ]
        return permission_denied(denied) if denied else None


def scan(roots: Sequence[str], prefix: str = "") -> Scan:
    """Look through ``roots`` once: the sandboxes found, the roots missing, what may not be read.

    Args:
        roots: the roots, in order.
        prefix: only directories whose name starts with it are looked into (and can be found or be
            unreadable); the others cost one name comparison each, not a ``stat``.
    """
    found: list[tuple[str, int, SandboxRef]] = []
    missing: list[tuple[str, str]] = []
    unreadable: list[str] = []
    for order, root in enumerate(roots):
        try:
            entries = sorted(
                (entry for entry in os.scandir(root) if entry.name.startswith(prefix)),
                key=lambda entry: entry.name,
            )
        except FileNotFoundError:
            missing.append((root, "no such directory"))
            continue
        except NotADirectoryError:
            missing.append((root, "not a directory"))
            continue
        except PermissionError:
            unreadable.append(root)
            continue
        for entry in entries:
            try:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                ref = _ref_for(root, entry.name)
            except PermissionError:
                unreadable.append(entry.path)
                continue
            except OSError:
                continue
            if ref is not None:
                found.append((ref.id, order, ref))
    found.sort(key=lambda item: (item[0], item[1]))
    return Scan(tuple(roots), tuple(ref for _, _, ref in found), tuple(missing), tuple(unreadable))


def list_sandboxes(roots: Sequence[str]) -> list[SandboxRef]:
    """Every sandbox in ``roots``, sorted by ID (then by root order). Missing roots are skipped."""
    return list(scan(roots).sandboxes)


def _roots_text(roots: Sequence[str]) -> str:
    return " or ".join(printable(root) for root in roots)


def _resolve_directory(path: str, roots: Sequence[str]) -> SandboxRef:
    real = os.path.realpath(path)
    for root in roots:
        real_root = os.path.realpath(root)
        parent = os.path.dirname(real)
        if parent == real_root and real != real_root:
            try:
                ref = _ref_for(root, os.path.basename(real))
            except PermissionError:
                raise permission_denied([path]) from None
            if ref is None:
                raise SandboxNotFound(
                    f"No sandbox socket in {printable(path)}: expected {' or '.join(SOCKET_NAMES)}",
                    hints=["Please check if the pod is running."],
                )
            return ref
    raise UsageError(
        f"Sandbox directory {printable(path)} is not inside a sandbox root ({_roots_text(roots)})",
        hints=["Pass the sandbox ID, or point -d/--socket-dir at the directory that holds it."],
    )


def resolve_sandbox(query: str, roots: Sequence[str]) -> SandboxRef:
    """The one sandbox ``query`` (ID, unique prefix, or absolute sandbox directory) names.

    Directories this user may not read count as possible matches: a prefix that could name one of
    them is a permission error rather than a guess.

    Raises:
        SandboxNotFound: nothing matches (the message lists what exists).
        AmbiguousSandbox: the prefix matches several sandboxes (the message lists them).
        SandboxError: the one root given does not exist, or a root or sandbox directory that could
            hold the match may not be read (``permission denied ... (run as root / sudo)``).
        UsageError: empty query, or an absolute path outside every root.
    """
    if not query:
        raise UsageError("empty sandbox ID", hints=["Run 'kuasarctl ps' to list sandboxes."])
    if os.path.isabs(query):
        return _resolve_directory(query, roots)
    shown = printable(query)
    if "/" in query:
        raise UsageError(f"invalid sandbox ID {query!r}: it contains '/'")
    # Only the directories named like the query can be the answer: look into those alone, and
    # through everything only to list what exists when none of them is.
    found = scan(roots, prefix=query)
    found.check_roots()
    sandboxes = found.sandboxes
    exact = [ref for ref in sandboxes if ref.id == query]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        raise AmbiguousSandbox(
            f'Pod ID "{shown}" exists in several roots:',
            matches=[ref.directory for ref in exact],
            hints=[*(f"  {printable(ref.directory)}" for ref in exact), "Pass -d/--socket-dir to pick one."],
        )
    matches = list(sandboxes)
    candidates = [os.path.basename(path) for path in found.unreadable]
    denied = found.permission_error([name for name in candidates if name.startswith(query)])
    if len(matches) == 1 and denied is None:
        return matches[0]
    if matches and denied is None:
        ids = [ref.id for ref in matches]
        raise AmbiguousSandbox(
            f'Pod prefix "{shown}" matches multiple pods:',
            matches=ids,
            hints=[
                *(f"  {printable(sandbox_id)}" for sandbox_id in ids),
                "Please provide a more specific prefix.",
            ],
        )
    if denied is None:
        found = scan(roots)
        sandboxes = found.sandboxes
        denied = found.permission_error()
    if denied is not None:
        raise denied
    if not sandboxes:
        raise SandboxNotFound(f"No pods found in {_roots_text(roots)}. Please check if any pods are running.")
    raise SandboxNotFound(
        f'No pod found with prefix "{shown}". Available pods:',
        hints=[f"  {printable(ref.id)}" for ref in sandboxes],
    )
