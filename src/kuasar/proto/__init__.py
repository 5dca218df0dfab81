"""Protobuf sources and their generated, checked-in stubs (``*_pb2.py`` / ``*_pb2.pyi``).

Layer contract: generated code only (plus this file and ``kata_pool.py``, the private descriptor
pool of Kata's ``kata_*`` stubs); regenerate with ``make proto`` (``scripts/gen_proto.py``).
Importing a stub imports the ``protobuf`` runtime, so only modules that really need messages
import from here. The stubs' runtime guard requires the protobuf version grpcio-tools generated
them for (7.35 or later).
"""
