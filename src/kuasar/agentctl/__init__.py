"""Arbitrary agent API calls on any guest (``kuasarctl agent``), sans-IO where it can be.

Layer contract: its own layer, ``agentctl``: above ``kuasar.errors``/``kuasar.codes`` (leaf),
``kuasar.config`` (bottom), the generated stubs (``kuasar.proto``) and the protobuf runtime; below
``kuasar.ctl``. It never dials, prints or exits, and imports neither ``kuasar.ttrpc`` nor
``kuasar.transport`` nor ``kuasar.session``: the runner is handed anything with the
:class:`~kuasar.agentctl.runner.Caller` shape (a ``kuasar.ttrpc.Client`` has it).

Modules, bottom up:

- ``catalog``: the services we ship descriptors for (Kata's ``grpc.AgentService``, ``grpc.Health``,
  Kuasar's ``grpc.SandboxService``, containerd's ``Task`` and ``Streaming``, ``kuasar.agent.v1``)
  and any ``--descriptor-set``; method lookup (full, short, kata-agent-ctl names), suggestions.
- ``fields``: descriptor helpers (find a field, name its type, complete a path).
- ``lexer``: one command string into words, ``json://`` documents and ``name=value`` pairs.
- ``compose``: those arguments into request messages, typed by the descriptor.
- ``auto``: generated IDs and defaults (kata-agent-ctl's auto values, minus its surprises).
- ``plan``: builtins (``echo``, ``sleep``, ``repeat``, ``quit``, ``help``), durations, the steps.
- ``report``: one call's outcome as a JSON line or as text; ``--list``.
- ``runner``: the asyncio driver that makes the calls.

Importing this package imports no protobuf; the submodules do.
"""

from __future__ import annotations
