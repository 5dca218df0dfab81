"""runc helpers for :mod:`kuasar.agent.containers`: bundles, runc's messages, users, consoles, exec.

Layer contract: guest side, private to ``kuasar.agent.containers``. Knows OCI bundle files, runc's
log format, ``/etc/passwd``, the console-socket handshake and how ``runc exec`` reports a command
it cannot start; runs processes through :mod:`kuasar.agent.process`; never ttrpc framing or protobuf.
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
from collections.abc import Mapping, Sequence

from kuasar.agent.process import Process, kill_subprocess
from kuasar.agent.users import parse_user
from kuasar.config import DEFAULT_LIMITS, Limits
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


def create_command(runc: str, root: str, state_dir: str, bundle: str, container_id: str) -> list[str]:
    """``runc --root R --log STATE/runc.log ... create --bundle B --pid-file STATE/init.pid ID``; the
    console variant (:func:`create_with_console`) inserts ``--console-socket`` before the ID."""
    log, pid = os.path.join(state_dir, "runc.log"), os.path.join(state_dir, "init.pid")
    options = ["--bundle", bundle, "--pid-file", pid]
    return [runc, "--root", root, "--log", log, "--log-format", "json", "create", *options, container_id]


async def _wait_create(process: asyncio.subprocess.Process, limits: Limits) -> int:
    try:
        async with asyncio.timeout(limits.runc_timeout):
            return await process.wait()
    except BaseException:
        await kill_subprocess(process, limits.kill_timeout)
        raise


async def create_with_pipes(
    command: list[str], output_fds: list[int], limits: Limits = DEFAULT_LIMITS
) -> None:
    """Run ``runc create`` (``command``) with the container's stdout and stderr on pipes; their read
    ends are appended to ``output_fds`` at once, so the caller closes them whatever happens.
    ``limits.runc_timeout`` bounds it."""
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
    if await _wait_create(process, limits) != 0:
        os.set_blocking(err_r, False)
        message = b""
        with contextlib.suppress(OSError):
            while len(message) < 64 * 1024 and (chunk := os.read(err_r, 64 * 1024)):
                message += chunk
        raise RPCError(Code.INVALID_ARGUMENT, f"runc create failed: {runc_message(message)}")


async def create_with_console(command: list[str], socket_dir: str, limits: Limits = DEFAULT_LIMITS) -> int:
    """Run ``runc create`` with ``--console-socket`` (a process with ``terminal: true``); returns the
    PTY master runc hands over. ``limits.runc_timeout`` bounds runc, ``console_handover`` the
    hand-over."""
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
            if await _wait_create(process, limits) != 0:
                assert process.stderr is not None
                message = await process.stderr.read(64 * 1024)
                raise RPCError(Code.INVALID_ARGUMENT, f"runc create failed: {runc_message(message)}")
            async with asyncio.timeout(limits.console_handover):
                return await receive
        finally:
            receive.cancel()
            await asyncio.wait({receive})  # raises only our own cancellation, never the receiver's
            if not receive.cancelled():
                receive.exception()  # seen: a failed hand-over shows as runc's status or the timeout
    finally:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


# -- exec ------------------------------------------------------------------------------------------

_EXEC_REFUSED = re.compile(r'exec: "(?:[^"\\]|\\.)*": (?P<reason>.*)$')
_EXEC_PREFIXES = ("exec failed: ", "unable to start container process: ")


def exec_command(  # noqa: PLR0917 - the parts of one command line
    runc: str,
    root: str,
    container_id: str,
    argv: Sequence[str],
    tty: bool,
    cwd: str,
    env: Mapping[str, str],
    user: str,
    pid_file: str = "",
    log_file: str = "",
) -> list[str]:
    """``runc --root ROOT [--log F --log-format json] exec [--pid-file P] ... ID ARGV...``.

    ``user`` is runc's numeric form (:func:`resolve_user`). With ``log_file`` runc's own error
    also lands there as JSON; with ``pid_file`` runc writes the command's PID once it runs.

    Raises:
        RPCError: ``INVALID_ARGUMENT`` when ``argv``, ``env`` or ``cwd`` is not UTF-8 text: runc
            hands them to the container's init as JSON, which would replace the other bytes.
    """
    try:
        for text in (*argv, *env.keys(), *env.values(), cwd):
            text.encode("utf-8")
    except UnicodeEncodeError:
        raise RPCError(
            Code.INVALID_ARGUMENT,
            "arguments, environment and working directory for a container must be UTF-8 text "
            "(runc passes them through JSON, which would replace other bytes)",
        ) from None
    command = [runc, "--root", root]
    if log_file:
        command += ["--log", log_file, "--log-format", "json"]
    command.append("exec")
    if pid_file:
        command += ["--pid-file", pid_file]
    if tty:
        command.append("--tty")
    if cwd:
        command += ["--cwd", cwd]
    for key, value in env.items():
        command += ["--env", f"{key}={value}"]
    if user:
        command += ["--user", user]
    return [*command, container_id, *argv]


def last_error(log_file: str) -> str:
    """The last ``error`` message in a runc JSON log, without runc's generic prefixes; or ``""``."""
    try:
        with open(log_file, "rb") as file:
            file.seek(max(0, os.fstat(file.fileno()).st_size - 64 * 1024))
            lines = file.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("level") in ("error", "fatal"):
            message = str(record.get("msg", ""))
            for prefix in _EXEC_PREFIXES:
                message = message.removeprefix(prefix)
            return message
    return ""


def exec_error(message: str, program: str, container_id: str) -> RPCError:
    """The Exec status for a ``runc exec`` that could not start ``program``: a missing program is
    ``NOT_FOUND`` (CLI 127) and one that cannot be executed ``PERMISSION_DENIED`` (126), as for a
    command in the guest itself."""
    where = f"in container {container_id}"
    refused = _EXEC_REFUSED.search(message)
    if refused is not None:
        reason = refused.group("reason")
        if "executable file not found" in reason or "no such file or directory" in reason:
            return RPCError(Code.NOT_FOUND, f"{program}: command not found {where}")
        if any(word in reason for word in ("permission denied", "exec format error", "is a directory")):
            return RPCError(Code.PERMISSION_DENIED, f"{program}: not executable {where} ({reason})")
    if message.startswith(("chdir to cwd", "unable to setup user")):
        return RPCError(Code.INVALID_ARGUMENT, f"cannot run {program} {where}: {message}")
    return RPCError(
        Code.FAILED_PRECONDITION, f"cannot run {program} {where}: {message or 'runc exec failed'}"
    )


def _written(path: str) -> bool:
    return os.path.exists(path)


async def _wait_started(
    exited: asyncio.Future[object], pid_file: str, log_file: str, program: str, container_id: str
) -> None:
    delay = 0.001
    while not _written(pid_file):  # runc tells nothing else: poll, backing off to 50 ms
        if exited.done():
            if _written(pid_file):  # written before runc waited: a quick command
                return
            raise exec_error(last_error(log_file), program, container_id)
        await asyncio.wait({exited}, timeout=delay)
        delay = min(delay * 2, 0.05)


async def start_exec(
    command: list[str],
    pid_file: str,
    log_file: str,
    program: str,
    container_id: str,
    *,
    tty: bool,
    rows: int,
    cols: int,
    stdin: bool,
    limits: Limits = DEFAULT_LIMITS,
) -> Process:
    """Run ``runc exec`` (``command``, from :func:`exec_command` with these files) as a process, and
    return it once the command runs (runc wrote ``pid_file``).

    If runc exits first it could not start the command: its output (runc's error, nothing of the
    command) is dropped and its message becomes the status (:func:`exec_error`).

    Raises:
        RPCError: from :func:`exec_error`; ``DEADLINE_EXCEEDED`` when runc neither starts the
            command nor exits within ``limits.runc_timeout``.
    """
    process = await Process.start(command, tty=tty, rows=rows, cols=cols, stdin=stdin, limits=limits)
    exited: asyncio.Future[object] = asyncio.ensure_future(process.wait())
    try:
        async with asyncio.timeout(limits.runc_timeout):
            await _wait_started(exited, pid_file, log_file, program, container_id)
    except BaseException as exc:
        await process.close()
        if isinstance(exc, TimeoutError):
            raise RPCError(
                Code.DEADLINE_EXCEEDED, f"runc exec did not start {program} in {limits.runc_timeout:g} s"
            ) from None
        raise
    finally:
        exited.cancel()
        for path in (pid_file, log_file):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    return process
