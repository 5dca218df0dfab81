"""One module per ``kuasarctl`` subcommand: ``register(subparsers)`` declares its flags and sets
``func(args) -> int | Coroutine[int]``. Heavy imports happen inside ``func``, never at import time."""
