"""kuasar-py: reach inside microVM sandboxes.

Layer contract: version and light re-exports only. Importing ``kuasar`` must stay cheap (no
protobuf, no asyncio): ``kuasarctl exec`` on the console path depends on it.
"""

from kuasar.errors import KuasarError

__version__ = "0.1.0"

__all__ = ["KuasarError", "__version__"]
