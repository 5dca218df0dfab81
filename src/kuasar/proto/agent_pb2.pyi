from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PingRequest(_message.Message):
    __slots__ = ("message", "timestamp_secs")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_SECS_FIELD_NUMBER: _ClassVar[int]
    message: str
    timestamp_secs: int
    def __init__(self, message: _Optional[str] = ..., timestamp_secs: _Optional[int] = ...) -> None: ...

class PingResponse(_message.Message):
    __slots__ = ("message", "version")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    message: str
    version: str
    def __init__(self, message: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class SystemInfo(_message.Message):
    __slots__ = ("kernel_version", "os_name", "os_version", "arch", "total_memory", "available_memory", "cpu_count", "load_average", "hostname", "uptime", "ip_addresses", "agent_version")
    KERNEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    OS_NAME_FIELD_NUMBER: _ClassVar[int]
    OS_VERSION_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MEMORY_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MEMORY_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    LOAD_AVERAGE_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    UPTIME_FIELD_NUMBER: _ClassVar[int]
    IP_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    kernel_version: str
    os_name: str
    os_version: str
    arch: str
    total_memory: int
    available_memory: int
    cpu_count: int
    load_average: _containers.RepeatedScalarFieldContainer[float]
    hostname: str
    uptime: int
    ip_addresses: _containers.RepeatedScalarFieldContainer[str]
    agent_version: str
    def __init__(self, kernel_version: _Optional[str] = ..., os_name: _Optional[str] = ..., os_version: _Optional[str] = ..., arch: _Optional[str] = ..., total_memory: _Optional[int] = ..., available_memory: _Optional[int] = ..., cpu_count: _Optional[int] = ..., load_average: _Optional[_Iterable[float]] = ..., hostname: _Optional[str] = ..., uptime: _Optional[int] = ..., ip_addresses: _Optional[_Iterable[str]] = ..., agent_version: _Optional[str] = ...) -> None: ...

class TerminalSize(_message.Message):
    __slots__ = ("rows", "cols")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    rows: int
    cols: int
    def __init__(self, rows: _Optional[int] = ..., cols: _Optional[int] = ...) -> None: ...

class ExecStart(_message.Message):
    __slots__ = ("argv", "env", "cwd", "user", "tty", "size", "container_id", "stdin", "argv_bytes", "env_bytes", "cwd_bytes")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ARGV_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    TTY_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    ARGV_BYTES_FIELD_NUMBER: _ClassVar[int]
    ENV_BYTES_FIELD_NUMBER: _ClassVar[int]
    CWD_BYTES_FIELD_NUMBER: _ClassVar[int]
    argv: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.ScalarMap[str, str]
    cwd: str
    user: str
    tty: bool
    size: TerminalSize
    container_id: str
    stdin: bool
    argv_bytes: _containers.RepeatedScalarFieldContainer[bytes]
    env_bytes: _containers.RepeatedScalarFieldContainer[bytes]
    cwd_bytes: bytes
    def __init__(self, argv: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ..., cwd: _Optional[str] = ..., user: _Optional[str] = ..., tty: _Optional[bool] = ..., size: _Optional[_Union[TerminalSize, _Mapping]] = ..., container_id: _Optional[str] = ..., stdin: _Optional[bool] = ..., argv_bytes: _Optional[_Iterable[bytes]] = ..., env_bytes: _Optional[_Iterable[bytes]] = ..., cwd_bytes: _Optional[bytes] = ...) -> None: ...

class ExecInput(_message.Message):
    __slots__ = ("start", "stdin", "stdin_eof", "resize", "signal")
    START_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    STDIN_EOF_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    start: ExecStart
    stdin: bytes
    stdin_eof: bool
    resize: TerminalSize
    signal: int
    def __init__(self, start: _Optional[_Union[ExecStart, _Mapping]] = ..., stdin: _Optional[bytes] = ..., stdin_eof: _Optional[bool] = ..., resize: _Optional[_Union[TerminalSize, _Mapping]] = ..., signal: _Optional[int] = ...) -> None: ...

class ExitStatus(_message.Message):
    __slots__ = ("exit_code", "signal", "core_dumped")
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    CORE_DUMPED_FIELD_NUMBER: _ClassVar[int]
    exit_code: int
    signal: int
    core_dumped: bool
    def __init__(self, exit_code: _Optional[int] = ..., signal: _Optional[int] = ..., core_dumped: _Optional[bool] = ...) -> None: ...

class ExecStarted(_message.Message):
    __slots__ = ("pid",)
    PID_FIELD_NUMBER: _ClassVar[int]
    pid: int
    def __init__(self, pid: _Optional[int] = ...) -> None: ...

class ExecOutput(_message.Message):
    __slots__ = ("started", "stdout", "stderr", "exit")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    EXIT_FIELD_NUMBER: _ClassVar[int]
    started: ExecStarted
    stdout: bytes
    stderr: bytes
    exit: ExitStatus
    def __init__(self, started: _Optional[_Union[ExecStarted, _Mapping]] = ..., stdout: _Optional[bytes] = ..., stderr: _Optional[bytes] = ..., exit: _Optional[_Union[ExitStatus, _Mapping]] = ...) -> None: ...

class CreateContainerRequest(_message.Message):
    __slots__ = ("id", "bundle", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    id: str
    bundle: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., bundle: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ContainerRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class StopContainerRequest(_message.Message):
    __slots__ = ("id", "signal", "timeout_seconds")
    ID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    signal: int
    timeout_seconds: int
    def __init__(self, id: _Optional[str] = ..., signal: _Optional[int] = ..., timeout_seconds: _Optional[int] = ...) -> None: ...

class RemoveContainerRequest(_message.Message):
    __slots__ = ("id", "force")
    ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    force: bool
    def __init__(self, id: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class ListContainersRequest(_message.Message):
    __slots__ = ("all",)
    ALL_FIELD_NUMBER: _ClassVar[int]
    all: bool
    def __init__(self, all: _Optional[bool] = ...) -> None: ...

class ContainerInfo(_message.Message):
    __slots__ = ("id", "bundle", "status", "pid", "created_at", "started_at", "finished_at", "exit", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    EXIT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    id: str
    bundle: str
    status: str
    pid: int
    created_at: int
    started_at: int
    finished_at: int
    exit: ExitStatus
    labels: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., bundle: _Optional[str] = ..., status: _Optional[str] = ..., pid: _Optional[int] = ..., created_at: _Optional[int] = ..., started_at: _Optional[int] = ..., finished_at: _Optional[int] = ..., exit: _Optional[_Union[ExitStatus, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListContainersResponse(_message.Message):
    __slots__ = ("containers",)
    CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    containers: _containers.RepeatedCompositeFieldContainer[ContainerInfo]
    def __init__(self, containers: _Optional[_Iterable[_Union[ContainerInfo, _Mapping]]] = ...) -> None: ...

class LogsRequest(_message.Message):
    __slots__ = ("container_id", "follow", "stdout", "stderr", "since", "until", "timestamps", "tail")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    follow: bool
    stdout: bool
    stderr: bool
    since: int
    until: int
    timestamps: bool
    tail: int
    def __init__(self, container_id: _Optional[str] = ..., follow: _Optional[bool] = ..., stdout: _Optional[bool] = ..., stderr: _Optional[bool] = ..., since: _Optional[int] = ..., until: _Optional[int] = ..., timestamps: _Optional[bool] = ..., tail: _Optional[int] = ...) -> None: ...

class LogEntry(_message.Message):
    __slots__ = ("stream", "data", "timestamp")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    stream: str
    data: bytes
    timestamp: int
    def __init__(self, stream: _Optional[str] = ..., data: _Optional[bytes] = ..., timestamp: _Optional[int] = ...) -> None: ...

class CopyOutRequest(_message.Message):
    __slots__ = ("container_id", "path")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    path: str
    def __init__(self, container_id: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class CopyHeader(_message.Message):
    __slots__ = ("container_id", "path", "kind", "mode", "mtime", "size", "name")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        FILE: _ClassVar[CopyHeader.Kind]
        TAR: _ClassVar[CopyHeader.Kind]
    FILE: CopyHeader.Kind
    TAR: CopyHeader.Kind
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MTIME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    path: str
    kind: CopyHeader.Kind
    mode: int
    mtime: int
    size: int
    name: str
    def __init__(self, container_id: _Optional[str] = ..., path: _Optional[str] = ..., kind: _Optional[_Union[CopyHeader.Kind, str]] = ..., mode: _Optional[int] = ..., mtime: _Optional[int] = ..., size: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class CopyChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: CopyHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[CopyHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class CopyInResponse(_message.Message):
    __slots__ = ("bytes_written",)
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    bytes_written: int
    def __init__(self, bytes_written: _Optional[int] = ...) -> None: ...
