"""``kuasarctl exec`` over our agent API (``kuasar.agent.v1.Agent/Exec``): stdin, separate stdout
and stderr, a PTY with live resize, Ctrl-C forwarded as SIGINT, the detach key.

Layer contract: ``kuasar.ctl`` only; a connected :class:`kuasar.guest.Guest` from the session, the
local terminal (``kuasar.ctl.terminal``) and fds (``kuasar.ctl.stdio``).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from kuasar.config import DEFAULT_LIMITS

if TYPE_CHECKING:
    from asyncio import Event
    from collections.abc import Awaitable, Callable

    from kuasar.guest import Guest
    from kuasar.remote_process import RemoteProcess

    Writer = Callable[[bytes], Awaitable[None]]


async def run_api(
    guest: Guest, args: argparse.Namespace, command: list[str], env: dict[str, str], escape: int | None
) -> int:
    import asyncio
    import contextlib
    import signal

    from kuasar.console import DEFAULT_SHELL, command_argv
    from kuasar.ctl import stdio, terminal
    from kuasar.ctl.main import exit_code_for
    from kuasar.errors import Interrupted

    stdin_fd, stdout_fd = sys.stdin.fileno(), sys.stdout.fileno()
    pty = (args.interactive and args.tty) or args.force_tty
    raw = pty and args.interactive and os.isatty(stdin_fd)
    size_fd = stdin_fd if raw else stdout_fd
    if pty:
        env.setdefault("TERM", os.environ.get("TERM") or "xterm")
    argv = command_argv(command) if command else DEFAULT_SHELL
    out, err = stdio.FdWriter(stdout_fd), stdio.FdWriter(sys.stderr.fileno())
    loop = asyncio.get_running_loop()
    detached, interrupted = asyncio.Event(), asyncio.Event()
    background: set[asyncio.Future[None]] = set()
    process = guest.exec(
        argv,
        tty=pty,
        size=terminal.window_size(size_fd) if pty else None,
        stdin=args.interactive,
        env=env,
        cwd=args.workdir,
        user=args.user,
        container_id=args.container,
    )

    async def forward() -> None:
        async for received in stdio.read_chunks(stdin_fd):
            chunk = received
            if raw and escape is not None and escape in chunk:
                chunk = chunk[: chunk.index(escape)]
                detached.set()
            if chunk:
                await process.write(chunk)
            if detached.is_set():
                return
        if not raw:
            await process.close_stdin()

    def spawn(coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        background.add(task)
        task.add_done_callback(background.discard)

    def on_sigint() -> None:
        if interrupted.is_set():  # the second Ctrl-C: stop waiting
            detached.set()
            return
        interrupted.set()
        spawn(process.send_signal(signal.SIGINT))

    def on_winch() -> None:
        spawn(process.resize(*terminal.window_size(size_fd)))

    handlers: list[int] = []
    with contextlib.ExitStack() as stack:
        screen = stack.enter_context(terminal.raw_terminal(stdin_fd)) if raw else None
        async with process:
            if not raw:
                loop.add_signal_handler(signal.SIGINT, on_sigint)
                handlers.append(signal.SIGINT)
            if pty and os.isatty(size_fd):
                loop.add_signal_handler(signal.SIGWINCH, on_winch)
                handlers.append(signal.SIGWINCH)
            try:
                if args.interactive:
                    spawn(forward())
                await _pump(process, out.write, err.write, detached=detached, interrupted=interrupted)
            finally:
                for signum in handlers:
                    loop.remove_signal_handler(signum)
                for task in list(background):
                    task.cancel()
                if background:
                    await asyncio.wait(background)
            finished = process.exited
        if screen is not None and detached.is_set() and not finished:
            screen.reset()
    if detached.is_set() and not interrupted.is_set():
        sys.stderr.write("\r\n[detached]\r\n")
        return 0
    if interrupted.is_set():
        return exit_code_for(error=Interrupted("interrupted"))
    if not finished:  # pragma: no cover - the pump only returns early on detach or interrupt
        return exit_code_for(error=Interrupted("interrupted"))
    result = process.result()
    return exit_code_for(exit_status=result.exit_status, signal_number=result.signal)


async def _pump(
    process: RemoteProcess, write_out: Writer, write_err: Writer, *, detached: Event, interrupted: Event
) -> None:
    """Copy output until the process exits, the user detaches, or a Ctrl-C's grace runs out."""
    import asyncio

    from kuasar.remote_process import STDERR

    stop: asyncio.Future[Any] = asyncio.ensure_future(detached.wait())
    interrupt: asyncio.Future[Any] | None = asyncio.ensure_future(interrupted.wait())
    read: asyncio.Future[Any] | None = None
    try:
        while True:
            if read is None:
                read = asyncio.ensure_future(process.read())
            waiting = {read, stop} if interrupt is None else {read, stop, interrupt}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if interrupt is not None and interrupt in done:  # keep copying, for a while
                interrupt = None
                stop.cancel()
                stop = asyncio.ensure_future(_either(detached, DEFAULT_LIMITS.interrupt_grace))
                continue
            if stop in done:
                return
            chunk = read.result()
            read = None
            if chunk is None:
                return
            await (write_err if chunk[0] == STDERR else write_out)(chunk[1])
    finally:
        pending = [task for task in (read, stop, interrupt) if task is not None]
        for task in pending:
            task.cancel()
        await asyncio.wait(pending)


async def _either(event: Event, seconds: float) -> None:
    import asyncio
    import contextlib

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
