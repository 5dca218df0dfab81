"""runc helpers for :mod:`kuasar.agent.containers`: bundles, runc's messages, users, consoles.

Layer contract: guest side, private to ``kuasar.agent.containers``. Knows OCI bundle files, runc's
log format, ``/etc/passwd`` and the console-socket handshake; never ttrpc framing or protobuf.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import re
import secrets
import socket

from kuasar.agent.process import parse_user
from kuasar.errors import RPCError
from kuasar.ttrpc.codes import Code

_PR_SET_CHILD_SUBREAPER = 36
_RUNC_MSG = re.compile(r'msg="((?:[^"\\]|\\.)*)"')


def set_child_subreaper() -> bool:
    """Make orphaned descendants (a container's init after ``runc create``) children of this process.

    Returns:
        True when the kernel accepted it.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0


def runc_message(stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace").strip()
    found = _RUNC_MSG.findall(text)
    if found:
        return str(found[-1]).replace('\\"', '"')
    return text.splitlines()[-1] if text else "no error message"


def read_bundle(bundle: str) -> tuple[str, bool]:
    """Validate a bundle; return ``(rootfs path, terminal)``."""
    if not os.path.isabs(bundle):
        raise RPCError(Code.INVALID_ARGUMENT, f"bundle must be an absolute path: {bundle!r}")
    config_path = os.path.join(bundle, "config.json")
    try:
        with open(config_path, encoding="utf-8") as file:
            spec = json.load(file)
    except FileNotFoundError:
        raise RPCError(Code.INVALID_ARGUMENT, f"bad bundle {bundle}: no config.json") from None
    except (OSError, ValueError) as exc:
        raise RPCError(Code.INVALID_ARGUMENT, f"bad bundle {bundle}: config.json: {exc}") from None
    if not isinstance(spec, dict):
        raise RPCError(Code.INVALID_ARGUMENT, f"bad bundle {bundle}: config.json is not an object")
    root = spec.get("root") or {}
    rootfs = os.path.join(bundle, str(root.get("path", "rootfs")) if isinstance(root, dict) else "rootfs")
    if not os.path.isdir(rootfs):
        raise RPCError(Code.INVALID_ARGUMENT, f"bad bundle {bundle}: rootfs {rootfs} is not a directory")
    process = spec.get("process") or {}
    terminal = bool(process.get("terminal", False)) if isinstance(process, dict) else False
    return rootfs, terminal


def resolve_user(rootfs: str, user: str) -> str:
    """``name``, ``uid``, ``name:group`` or ``uid:gid`` to runc's numeric ``uid[:gid]``, with names
    looked up in the container's ``/etc/passwd`` and ``/etc/group``.

    Raises:
        RPCError: ``INVALID_ARGUMENT`` for a malformed spec, an out-of-range id, or a name the
            container does not know.
    """
    parsed = parse_user(user)
    if parsed is None:
        return ""

    def lookup(table: str, key: int | str, column: int) -> str:
        if isinstance(key, int):
            return str(key)
        try:
            with open(os.path.join(rootfs, "etc", table), encoding="utf-8", errors="replace") as file:
                for line in file:
                    fields = line.rstrip("\n").split(":")
                    if len(fields) > 3 and fields[0] == key:
                        return fields[column]
        except OSError:
            pass
        kind = "group" if table == "group" else "user"
        raise RPCError(Code.INVALID_ARGUMENT, f"unknown {kind} {key!r} in the container")

    uid = lookup("passwd", parsed.user, 2)
    if parsed.group is not None:
        return f"{uid}:{lookup('group', parsed.group, 2)}"
    if isinstance(parsed.user, str):
        return f"{uid}:{lookup('passwd', parsed.user, 3)}"
    return uid


async def receive_console(listener: socket.socket) -> int:
    """Accept runc's connection on the console socket and take the PTY master it sends."""
    loop = asyncio.get_running_loop()
    connection, _ = await loop.sock_accept(listener)
    with connection:
        connection.setblocking(False)
        while True:
            try:
                _, fds, _, _ = socket.recv_fds(connection, 4096, 1)
            except BlockingIOError:
                waiter = loop.create_future()
                loop.add_reader(connection.fileno(), waiter.set_result, None)
                try:
                    await waiter
                finally:
                    loop.remove_reader(connection.fileno())
                continue
            if not fds:
                raise RPCError(Code.INTERNAL, "runc sent no console descriptor")
            for extra in fds[1:]:
                os.close(extra)
            return fds[0]


def read_pid(path: str) -> int:
    """The PID runc wrote to ``--pid-file``."""
    with open(path, encoding="ascii") as file:
        return int(file.read().strip())


#: Bound on one runc invocation (create, start, kill, delete, state).
RUNC_TIMEOUT = 60.0


async def _wait_create(process: asyncio.subprocess.Process) -> int:
    try:
        async with asyncio.timeout(RUNC_TIMEOUT):
            return await process.wait()
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise


async def create_with_pipes(command: list[str], output_fds: list[int]) -> None:
    """Run ``runc create`` (``command``) with the container's stdout and stderr on pipes; their read
    ends are appended to ``output_fds`` at once, so the caller closes them whatever happens."""
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    output_fds += [out_r, err_r]
    try:
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.DEVNULL, stdout=out_w, stderr=err_w
        )
    finally:
        os.close(out_w)
        os.close(err_w)
    if await _wait_create(process) != 0:
        os.set_blocking(err_r, False)
        message = b""
        with contextlib.suppress(OSError):
            while len(message) < 64 * 1024 and (chunk := os.read(err_r, 64 * 1024)):
                message += chunk
        raise RPCError(Code.INVALID_ARGUMENT, f"runc create failed: {runc_message(message)}")


async def create_with_console(command: list[str], socket_dir: str) -> int:
    """Run ``runc create`` with ``--console-socket`` (a process with ``terminal: true``); returns the
    PTY master runc hands over."""
    path = os.path.join(socket_dir, f"c{secrets.token_hex(6)}.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        listener.listen(1)
        listener.setblocking(False)
        process = await asyncio.create_subprocess_exec(
            *command[:-1],
            "--console-socket",
            path,
            command[-1],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        receive = asyncio.create_task(receive_console(listener))
        try:
            if await _wait_create(process) != 0:
                assert process.stderr is not None
                message = await process.stderr.read(64 * 1024)
                raise RPCError(Code.INVALID_ARGUMENT, f"runc create failed: {runc_message(message)}")
            async with asyncio.timeout(5):
                return await receive
        finally:
            if not receive.done():
                receive.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, TimeoutError):
                await receive
    finally:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
