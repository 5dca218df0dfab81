"""The private descriptor pool of Kata's agent API stubs (``kata_*_pb2``).

Layer contract: with the generated stubs (``kuasar.proto``); imports only the protobuf runtime.
Kata and Kuasar both declare messages in package ``grpc`` and disagree on one of them
(``grpc.UpdateRoutesRequest``), so Kata's files cannot share the default pool with
``sandbox_pb2``; ``scripts/gen_proto.py`` makes every ``kata_*.proto`` stub add its file here
instead. The well-known files those stubs import are added first.
"""

from __future__ import annotations

from google.protobuf import descriptor_pool, empty_pb2

#: Kata's grpc.AgentService and everything it references.
POOL = descriptor_pool.DescriptorPool()
POOL.AddSerializedFile(empty_pb2.DESCRIPTOR.serialized_pb)
