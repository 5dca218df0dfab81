"""gRPC status codes, re-exported from the leaf module ``kuasar.codes``.

Layer contract: ``Code`` lives in ``kuasar.codes`` (imports nothing from kuasar). This name is kept
so ``kuasar.ttrpc.codes.Code`` and ``kuasar.ttrpc.Code`` keep working. Importing it still runs
``kuasar/ttrpc/__init__.py`` (client, server, protobuf): modules outside ``kuasar.ttrpc`` that only
need a code import ``kuasar.codes``.
"""

from __future__ import annotations

from kuasar.codes import Code

__all__ = ["Code"]
