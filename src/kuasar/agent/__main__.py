"""``python -m kuasar.agent``: the ``kuasar-agent`` program.

Layer contract: agent top; no code of its own. It runs :mod:`kuasar.agent.main` as ``__main__``,
exactly as ``python -m kuasar.agent.main`` and the ``kuasar-agent`` script do, so that module's
main guard stays the agent's one exit point.
"""

from __future__ import annotations

import runpy

if __name__ == "__main__":
    runpy.run_module("kuasar.agent.main", run_name="__main__", alter_sys=True)
