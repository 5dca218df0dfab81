"""One module per ``kuasarctl`` subcommand: ``register(subparsers)`` declares its flags and sets
``func(args) -> int | Coroutine[int]``. Heavy imports happen inside ``func``, never at import time.

:data:`COMMANDS` is the one table of commands, their aliases, the module that registers them and
their one-line summary; ``kuasar.ctl.main`` imports only the module of the command being run (the
others appear in ``kuasarctl --help`` from this table alone).
"""

from __future__ import annotations

#: (name, aliases, module under kuasar.ctl.commands, summary), in ``--help`` order.
COMMANDS: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("exec", (), "exec_cmd", "run a command or a shell inside a sandbox"),
    ("ps", ("ls",), "ps", "list sandboxes"),
    ("info", (), "info", "show a sandbox's system information"),
    ("logs", (), "logs", "print a container's logs"),
    ("cp", (), "cp", "copy files between the host and a sandbox"),
    ("containers", (), "containers", "list a sandbox's containers"),
    ("container", (), "containers", "create, start, stop or remove a container in a sandbox"),
    ("sandbox", (), "sandbox", "run and stop sandboxes: local ones, or real kernels under QEMU"),
    ("image", (), "image", "build the guest image of QEMU sandboxes ahead of their first run"),
    ("agent", (), "agent_cmd", "make any agent API call (kata-agent-ctl style)"),
    ("completion", (), "completion", "print the shell code that enables tab completion"),
)


def summary(name: str) -> str:
    """A command"s one-line summary (its ``help`` in the root parser"s list)."""
    return next(text for command, _, _, text in COMMANDS if command == name)
