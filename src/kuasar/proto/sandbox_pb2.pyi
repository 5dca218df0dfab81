from google.protobuf import any_pb2 as _any_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from kuasar.proto import health_pb2 as _health_pb2
from kuasar.proto import containerd_events_ttrpc_pb2 as _containerd_events_ttrpc_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IPFamily(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    v4: _ClassVar[IPFamily]
    v6: _ClassVar[IPFamily]
v4: IPFamily
v6: IPFamily

class ExecVMProcessRequest(_message.Message):
    __slots__ = ("command", "stdin")
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    command: str
    stdin: bytes
    def __init__(self, command: _Optional[str] = ..., stdin: _Optional[bytes] = ...) -> None: ...

class ExecVMProcessResponse(_message.Message):
    __slots__ = ("out",)
    OUT_FIELD_NUMBER: _ClassVar[int]
    out: str
    def __init__(self, out: _Optional[str] = ...) -> None: ...

class SyncClockPacket(_message.Message):
    __slots__ = ("ClientSendTime", "ClientArriveTime", "ServerSendTime", "ServerArriveTime", "Delta")
    CLIENTSENDTIME_FIELD_NUMBER: _ClassVar[int]
    CLIENTARRIVETIME_FIELD_NUMBER: _ClassVar[int]
    SERVERSENDTIME_FIELD_NUMBER: _ClassVar[int]
    SERVERARRIVETIME_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    ClientSendTime: int
    ClientArriveTime: int
    ServerSendTime: int
    ServerArriveTime: int
    Delta: int
    def __init__(self, ClientSendTime: _Optional[int] = ..., ClientArriveTime: _Optional[int] = ..., ServerSendTime: _Optional[int] = ..., ServerArriveTime: _Optional[int] = ..., Delta: _Optional[int] = ...) -> None: ...

class IPAddress(_message.Message):
    __slots__ = ("family", "address", "mask")
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    family: IPFamily
    address: str
    mask: str
    def __init__(self, family: _Optional[_Union[IPFamily, str]] = ..., address: _Optional[str] = ..., mask: _Optional[str] = ...) -> None: ...

class Interface(_message.Message):
    __slots__ = ("device", "name", "IPAddresses", "mtu", "hwAddr", "type", "raw_flags")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    IPADDRESSES_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    HWADDR_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    RAW_FLAGS_FIELD_NUMBER: _ClassVar[int]
    device: str
    name: str
    IPAddresses: _containers.RepeatedCompositeFieldContainer[IPAddress]
    mtu: int
    hwAddr: str
    type: str
    raw_flags: int
    def __init__(self, device: _Optional[str] = ..., name: _Optional[str] = ..., IPAddresses: _Optional[_Iterable[_Union[IPAddress, _Mapping]]] = ..., mtu: _Optional[int] = ..., hwAddr: _Optional[str] = ..., type: _Optional[str] = ..., raw_flags: _Optional[int] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("dest", "gateway", "device", "source", "scope", "family", "flags")
    DEST_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    dest: str
    gateway: str
    device: str
    source: str
    scope: int
    family: IPFamily
    flags: int
    def __init__(self, dest: _Optional[str] = ..., gateway: _Optional[str] = ..., device: _Optional[str] = ..., source: _Optional[str] = ..., scope: _Optional[int] = ..., family: _Optional[_Union[IPFamily, str]] = ..., flags: _Optional[int] = ...) -> None: ...

class UpdateInterfacesRequest(_message.Message):
    __slots__ = ("interfaces",)
    INTERFACES_FIELD_NUMBER: _ClassVar[int]
    interfaces: _containers.RepeatedCompositeFieldContainer[Interface]
    def __init__(self, interfaces: _Optional[_Iterable[_Union[Interface, _Mapping]]] = ...) -> None: ...

class UpdateRoutesRequest(_message.Message):
    __slots__ = ("routes",)
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    def __init__(self, routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ...) -> None: ...

class SetupSandboxRequest(_message.Message):
    __slots__ = ("config", "interfaces", "routes")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    INTERFACES_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    config: _any_pb2.Any
    interfaces: _containers.RepeatedCompositeFieldContainer[Interface]
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    def __init__(self, config: _Optional[_Union[_any_pb2.Any, _Mapping]] = ..., interfaces: _Optional[_Iterable[_Union[Interface, _Mapping]]] = ..., routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ...) -> None: ...
