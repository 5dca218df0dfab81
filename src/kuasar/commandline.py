"""What an exec runs, whichever path carries it: one argument with spaces or shell syntax is a shell
command line (``exec -t pod "ls -la && ps aux"``, as in the original kuasarctl), and the shell of
``exec -it SANDBOX`` with no command.

Layer contract: bottom layer; no imports. The console's exec line (``kuasar.console``) and the
agent API's ``ExecStart`` (``kuasar.ctl.commands.exec_api``) both start from :func:`command_argv`, so
the API path loads neither the console module nor ``re``.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

#: The shell of ``exec -it SANDBOX`` with no command: bash when the guest has it.
DEFAULT_SHELL = ("/bin/sh", "-c", "command -v bash >/dev/null 2>&1 && exec bash; exec sh")
#: What makes one argument a shell command line, besides whitespace (``str.isspace``, as ``\s``).
_SHELL_SYNTAX = frozenset(";&|<>()$`\\\"'*?[]#~=%{}!")


def command_argv(argv: Sequence[str]) -> list[str]:
    """The argv to run: a single argument with spaces or shell syntax is a shell command line."""
    if len(argv) == 1 and any(char in _SHELL_SYNTAX or char.isspace() for char in argv[0]):
        return ["sh", "-c", argv[0]]
    return list(argv)
