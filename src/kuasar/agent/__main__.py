"""``python -m kuasar.agent``: the ``kuasar-agent`` entry point.

Layer contract: agent top; only calls :func:`kuasar.agent.main.main`.
"""

from __future__ import annotations

import sys

from kuasar.agent.main import main

if __name__ == "__main__":
    sys.exit(main())
