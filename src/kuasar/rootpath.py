"""Paths confined to a root directory (a container's rootfs, or ``/``), resolved as the root sees them.

Layer contract: neutral module shared by the guest agent (copy in and out of the guest and its
containers) and the host CLI (the local end of ``kuasarctl cp``); imports neither ``kuasar.agent``
nor ``kuasar.ctl`` nor ``kuasar.sandbox``: only ``kuasar.errors`` and ``kuasar.codes`` (no
protobuf). Failures are :class:`kuasar.errors.RPCError` with the Agent API's status, so the agent
can answer with them and the CLI can word them as local errors.

Confinement (:func:`resolve_in_root`): a path is resolved one component at a time *inside* the
root, as the container sees it. Symlinks are followed there: an absolute target is taken from the
container's ``/`` (so ``/etc/x -> /etc/passwd`` is the container's passwd, never the guest's), and
a ``..`` that climbs above the root — in the request or in a symlink's target — is refused with
``PERMISSION_DENIED``. For the guest's own filesystem (root ``/``) ``..`` at the top simply stays
there. A container that rewrites its own symlinks while a copy runs can race the resolution (as
with ``docker cp``); it can only reach its own rootfs's view through ``/proc/PID/root`` while
running, or the bundle rootfs when stopped.
"""

from __future__ import annotations

import os
import stat
from collections import deque

from kuasar.codes import Code
from kuasar.errors import RPCError

#: Symlinks followed while resolving one path before it is called a loop (Linux's own limit).
MAX_LINKS = 40


def _denied(path: str) -> RPCError:
    return RPCError(Code.PERMISSION_DENIED, f"path escapes the container rootfs: {path!r}")


def resolve_in_root(root: str, path: str, *, follow_last: bool = True) -> str:
    """Resolve ``path`` as seen from ``root``; return the in-root absolute path (``/a/b``).

    Args:
        root: the directory that is ``/`` for ``path``.
        path: an absolute path as the root sees it.
        follow_last: follow a symlink in the last component too (else it is the result).

    Raises:
        RPCError: ``INVALID_ARGUMENT`` for a relative path or a symlink loop, ``PERMISSION_DENIED``
            for a ``..`` escape when ``root`` is not ``/``, ``NOT_FOUND`` when a component on the
            way is not a directory.
    """
    if not path.startswith("/"):
        raise RPCError(Code.INVALID_ARGUMENT, f"path must be absolute: {path!r}")
    confined = os.path.abspath(root) != "/"
    pending = deque(part for part in path.split("/") if part not in ("", "."))
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.popleft()
        if part == "..":
            if not resolved:
                if confined:
                    raise _denied(path)
                continue
            resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            info = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        except NotADirectoryError:
            raise RPCError(Code.NOT_FOUND, f"not a directory on the way to {path!r}") from None
        if stat.S_ISLNK(info.st_mode) and (pending or follow_last):
            links += 1
            if links > MAX_LINKS:
                raise RPCError(Code.INVALID_ARGUMENT, f"too many symlinks resolving {path!r}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            pending.extendleft(reversed([p for p in target.split("/") if p not in ("", ".")]))
            continue
        resolved.append(part)
    return "/" + "/".join(resolved)


def is_under(path: str, directory: str) -> bool:
    """``path`` is ``directory`` or inside it (both in-root absolute paths, already normalised)."""
    return directory in ("/", path) or path.startswith(directory.rstrip("/") + "/")


def host_path(root: str, in_root: str) -> str:
    """The real path of an in-root path from :func:`resolve_in_root`."""
    return os.path.join(root, in_root.lstrip("/")) if in_root != "/" else root


def os_error(exc: OSError, path: str) -> RPCError:
    """The Agent API's status for a failed file operation on ``path``."""
    if isinstance(exc, FileNotFoundError):
        return RPCError(Code.NOT_FOUND, f"no such file or directory: {path}")
    if isinstance(exc, PermissionError):
        return RPCError(Code.PERMISSION_DENIED, f"permission denied: {path}")
    if isinstance(exc, (IsADirectoryError, NotADirectoryError, FileExistsError)):
        return RPCError(Code.FAILED_PRECONDITION, f"{exc.strerror}: {path}")
    return RPCError(Code.INTERNAL, f"{exc.strerror or exc}: {path}")


__all__ = ["MAX_LINKS", "host_path", "is_under", "os_error", "resolve_in_root"]
