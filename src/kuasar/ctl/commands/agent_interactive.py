"""``kuasarctl agent -i``: a prompt with readline history and completion of methods and fields.

Layer contract: ``kuasar.ctl`` only. Lines are read in a daemon thread (``input()`` blocks; the
event loop keeps the connection), one line at a time, each run through the same planner and
runner as ``-c``: a bad line prints its error and the prompt returns; a failed call is reported and
the session goes on. ``quit``, ``exit`` or Ctrl-D end it; Ctrl-C leaves at once (exit 130), with
the terminal's settings restored. History lives in ``$KUASARCTL_AGENT_HISTORY`` (default
``~/.kuasarctl_agent_history``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

from kuasar.ctl import output
from kuasar.ctl.commands.agent_cmd import note
from kuasar.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from kuasar.agentctl.catalog import Catalog
    from kuasar.agentctl.plan import Planner
    from kuasar.agentctl.runner import Runner

PROMPT = "agent> "
HISTORY_ENV = "KUASARCTL_AGENT_HISTORY"
HISTORY_LENGTH = 1000


def history_path() -> str:
    return os.environ.get(HISTORY_ENV) or os.path.expanduser("~/.kuasarctl_agent_history")


class Completer:
    """readline's completer: builtins and method names first, then the method's request fields."""

    def __init__(self, catalog: Catalog, line: Any) -> None:
        from kuasar.agentctl.plan import BUILTINS

        self.catalog = catalog
        self.line = line  # () -> (the whole line, the start of the word being completed)
        self.names = sorted({*catalog.names(), *BUILTINS})
        self.matches: list[str] = []

    def options(self, text: str, before: list[str]) -> list[str]:
        from kuasar.agentctl.fields import field_completions

        if before[:1] == ["repeat"]:
            before = before[2:]
        if not before:
            return [name + " " for name in self.names if name.startswith(text)]
        try:
            methods = self.catalog.candidates(before[0])
        except UsageError:
            return []
        found: list[str] = []
        for method in methods:
            found.extend(c for c in field_completions(method.descriptor.input_type, text) if c not in found)
        return found

    def complete(self, text: str, state: int) -> str | None:
        if state == 0:
            whole, begin = self.line()
            try:
                self.matches = self.options(text, whole[:begin].split())
            except Exception:  # a completer must never raise into readline
                self.matches = []
        return self.matches[state] if state < len(self.matches) else None


@contextlib.contextmanager
def _readline(catalog: Catalog) -> Iterator[bool]:
    """readline set up with history and completion (``False`` when stdin is not a terminal)."""
    if not sys.stdin.isatty():
        yield False
        return
    import readline
    import termios

    saved = termios.tcgetattr(sys.stdin.fileno())
    path = history_path()
    with contextlib.suppress(OSError):
        readline.read_history_file(path)
    readline.set_history_length(HISTORY_LENGTH)
    completer = Completer(catalog, lambda: (readline.get_line_buffer(), readline.get_begidx()))
    readline.set_completer(completer.complete)
    readline.set_completer_delims(" \t\n")
    readline.parse_and_bind("tab: complete")
    try:
        yield True
    finally:
        readline.set_completer(None)
        with contextlib.suppress(OSError):
            readline.write_history_file(path)
        with contextlib.suppress(termios.error):
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)


async def _read_line(prompt: str) -> str | None:
    """One line from stdin (``None`` at EOF), read in a daemon thread so the loop keeps running."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[str | None] = loop.create_future()

    def deliver(line: str | None) -> None:
        if not future.done():
            future.set_result(line)

    def read() -> None:
        try:
            line: str | None = input(prompt)
        except (EOFError, OSError, ValueError):
            line = None
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(deliver, line)

    threading.Thread(target=read, name="kuasarctl-agent-input", daemon=True).start()
    return await future


async def interact(
    runner: Runner, planner: Planner, label: str, kind: str | None, *, json_mode: bool
) -> None:
    """Read and run commands until ``quit``, EOF, or a dropped connection.

    Raises:
        TransportError: the connection failed.
    """
    with _readline(planner.catalog) as terminal:
        if terminal:
            note(f"connected to {label} ({kind or 'ttrpc'}); 'help' lists commands, 'quit' or Ctrl-D leaves")
        prompt = PROMPT if terminal else ""
        while not runner.quit:
            try:
                line = await _read_line(prompt)
            except asyncio.CancelledError:  # Ctrl-C at the prompt: end its line, then leave
                if terminal:
                    output.write_stdout("\n")
                raise
            if line is None:
                if terminal:
                    output.write_stdout("\n")
                return
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                step = planner.parse(text)
                if step is None:
                    continue
                await runner.run([step])
            except UsageError as exc:
                output.print_error(exc)
            if json_mode:
                output.flush_stdout()
