"""The one parser for every address form kuasar-py dials or listens on.

Layer contract: bottom layer; pure string handling, imports only ``kuasar.errors``. No sockets here:
``kuasar.transport`` turns these frozen records into connections.

Forms (see design.md "Addresses")::

    hvsock://PATH:PORT      hybrid vsock: a VMM's UNIX socket, then ``CONNECT PORT``
    unix://PATH             plain UNIX socket (``unix:///abs`` or ``unix://rel``)
    unix://@NAME            abstract UNIX socket
    vsock://CID:PORT        AF_VSOCK; CID ``-1`` or ``any`` means VMADDR_CID_ANY (listen)
    /abs/path, ./rel        a bare path is a plain UNIX socket

A leading ``ttrpc+`` (containerd's ``task_address`` form) is accepted and ignored.
"""

from __future__ import annotations

from kuasar._record import Record
from kuasar.errors import AddressError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

#: ``VMADDR_CID_ANY``: listen on every CID.
VMADDR_CID_ANY = 0xFFFFFFFF
#: ``VMADDR_CID_LOCAL``: loopback inside one kernel (vsock_loopback).
VMADDR_CID_LOCAL = 1
_MAX_PORT = 0xFFFFFFFF
#: sun_path is 108 bytes including the terminating NUL (abstract names use the leading NUL instead).
_MAX_UNIX_PATH = 107

_FORMS_HINT = "valid forms: hvsock://PATH:PORT, unix://PATH, unix://@NAME, vsock://CID:PORT, /abs/path"


class UnixAddress(Record):
    """A UNIX stream socket, by path or (``abstract=True``) by abstract name."""

    path: str
    abstract: bool = False

    def __str__(self) -> str:
        return f"unix://@{self.path}" if self.abstract else f"unix://{self.path}"

    @property
    def sockaddr(self) -> str:
        """The address as ``socket.connect``/``bind`` want it (leading NUL for abstract names)."""
        return "\0" + self.path if self.abstract else self.path


class HvsockAddress(Record):
    """A hybrid vsock port behind a VMM's UNIX socket (Cloud Hypervisor, Firecracker)."""

    path: str
    port: int

    def __str__(self) -> str:
        return f"hvsock://{self.path}:{self.port}"


class VsockAddress(Record):
    """An AF_VSOCK address. ``cid == VMADDR_CID_ANY`` only makes sense to listen."""

    cid: int
    port: int

    def __str__(self) -> str:
        cid = "-1" if self.cid == VMADDR_CID_ANY else str(self.cid)
        return f"vsock://{cid}:{self.port}"


Address = UnixAddress | HvsockAddress | VsockAddress


def _bad(text: str, why: str) -> AddressError:
    return AddressError(f"invalid address {text!r}: {why}", hints=[_FORMS_HINT])


def _parse_port(text: str, value: str) -> int:
    if not value.isdecimal():
        raise _bad(text, f"port {value!r} is not a decimal number")
    port = int(value)
    if port > _MAX_PORT:
        raise _bad(text, f"port {port} is out of range (0..{_MAX_PORT})")
    return port


def _check_path(text: str, path: str) -> str:
    if not path:
        raise _bad(text, "empty socket path")
    if "\0" in path:
        raise _bad(text, "socket path contains a NUL byte")
    if len(path.encode()) > _MAX_UNIX_PATH:
        raise _bad(text, f"socket path is longer than {_MAX_UNIX_PATH} bytes")
    return path


def _parse_hvsock(text: str, rest: str) -> HvsockAddress:
    path, sep, port = rest.rpartition(":")
    if not sep:
        raise _bad(text, "missing :PORT after the socket path")
    return HvsockAddress(_check_path(text, path), _parse_port(text, port))


def _parse_unix(text: str, rest: str) -> UnixAddress:
    if rest.startswith("@"):
        name = rest[1:]
        if not name:
            raise _bad(text, "empty abstract socket name")
        if len(name.encode()) > _MAX_UNIX_PATH:
            raise _bad(text, f"abstract name is longer than {_MAX_UNIX_PATH} bytes")
        return UnixAddress(name, abstract=True)
    return UnixAddress(_check_path(text, rest))


def _parse_vsock(text: str, rest: str) -> VsockAddress:
    cid_text, sep, port = rest.rpartition(":")
    if not sep:
        raise _bad(text, "missing :PORT after the CID")
    if cid_text in ("-1", "any", ""):
        cid = VMADDR_CID_ANY
    elif cid_text.isdecimal() and int(cid_text) <= _MAX_PORT:
        cid = int(cid_text)
    else:
        raise _bad(text, f"CID {cid_text!r} is not a number, -1 or any")
    return VsockAddress(cid, _parse_port(text, port))


_SCHEMES: dict[str, Callable[[str, str], Address]] = {
    "hvsock": _parse_hvsock,
    "unix": _parse_unix,
    "vsock": _parse_vsock,
}


def parse_address(text: str) -> Address:
    """Parse any address form into its frozen record.

    Raises:
        AddressError: the text is not one of the forms, with a hint listing them.
    """
    body = text.strip()
    if body.startswith("ttrpc+"):
        body = body[len("ttrpc+") :]
    scheme, sep, rest = body.partition("://")
    if not sep:
        if body.startswith(("/", "./", "../")):
            return UnixAddress(_check_path(text, body))
        raise _bad(text, "no scheme and not a path")
    parser = _SCHEMES.get(scheme.lower())
    if parser is None:
        raise _bad(text, f"unknown scheme {scheme!r}")
    return parser(text, rest)


def with_port(address: Address, port: int) -> Address:
    """The same endpoint on another port: hybrid vsock and vsock change port; a plain UNIX socket
    becomes the hybrid vsock address behind it (agent-ctl's ``--hybrid-vsock`` meaning)."""
    if isinstance(address, HvsockAddress):
        return HvsockAddress(address.path, port)
    if isinstance(address, VsockAddress):
        return VsockAddress(address.cid, port)
    if address.abstract:
        raise AddressError(f"{address} is an abstract UNIX socket and has no ports")
    return HvsockAddress(address.path, port)
