"""kuasar.address: every valid form parses to its frozen record, every bad form is a clear error."""

from __future__ import annotations

import pytest

from kuasar.address import (
    VMADDR_CID_ANY,
    HvsockAddress,
    UnixAddress,
    VsockAddress,
    parse_address,
    with_port,
)
from kuasar.errors import AddressError, UsageError

VALID = [
    ("hvsock:///run/kuasar-vmm/abc/task.vsock:1024", HvsockAddress("/run/kuasar-vmm/abc/task.vsock", 1024)),
    ("hvsock://relative/task.socket:1025", HvsockAddress("relative/task.socket", 1025)),
    ("hvsock:///tmp/a:b/task.vsock:7", HvsockAddress("/tmp/a:b/task.vsock", 7)),  # last colon splits
    ("hvsock:///x:0", HvsockAddress("/x", 0)),
    ("hvsock:///x:4294967295", HvsockAddress("/x", 0xFFFFFFFF)),
    (
        "ttrpc+hvsock:///run/kuasar-vmm/abc/task.vsock:1024",
        HvsockAddress("/run/kuasar-vmm/abc/task.vsock", 1024),
    ),
    ("HVSOCK:///x:1", HvsockAddress("/x", 1)),
    ("unix:///run/containerd/containerd.sock", UnixAddress("/run/containerd/containerd.sock")),
    ("unix://rel.sock", UnixAddress("rel.sock")),
    ("unix://@kuasar-agent", UnixAddress("kuasar-agent", abstract=True)),
    ("unix://@with space", UnixAddress("with space", abstract=True)),
    ("ttrpc+unix:///run/x.sock", UnixAddress("/run/x.sock")),
    ("vsock://3:1024", VsockAddress(3, 1024)),
    ("vsock://1:5000", VsockAddress(1, 5000)),
    ("vsock://-1:1025", VsockAddress(VMADDR_CID_ANY, 1025)),
    ("vsock://any:1025", VsockAddress(VMADDR_CID_ANY, 1025)),
    ("vsock://:1025", VsockAddress(VMADDR_CID_ANY, 1025)),
    ("vsock://4294967295:1", VsockAddress(VMADDR_CID_ANY, 1)),
    ("/run/kuasar/pod/task.socket", UnixAddress("/run/kuasar/pod/task.socket")),
    ("./task.socket", UnixAddress("./task.socket")),
    ("../up/task.socket", UnixAddress("../up/task.socket")),
    ("  /padded.sock \n", UnixAddress("/padded.sock")),
]


@pytest.mark.parametrize(("text", "expected"), VALID, ids=[text for text, _ in VALID])
def test_valid_forms(text: str, expected: object) -> None:
    assert parse_address(text) == expected


INVALID = [
    ("", "no scheme and not a path"),
    ("   ", "no scheme and not a path"),
    ("task.socket", "no scheme and not a path"),
    ("pod/task.socket", "no scheme and not a path"),
    ("tcp://127.0.0.1:80", "unknown scheme 'tcp'"),
    ("vsok://3:1024", "unknown scheme 'vsok'"),
    ("://x", "unknown scheme ''"),
    ("hvsock:///run/x.vsock", "missing :PORT"),
    ("hvsock://:1024", "empty socket path"),
    ("hvsock:///x:", "port '' is not a decimal number"),
    ("hvsock:///x:abc", "port 'abc' is not a decimal number"),
    ("hvsock:///x:-1", "port '-1' is not a decimal number"),
    ("hvsock:///x:+5", "port '+5' is not a decimal number"),
    ("hvsock:///x: 5", "port ' 5' is not a decimal number"),
    ("hvsock:///x:4294967296", "out of range"),
    ("hvsock:///" + "p" * 120 + ":1", "longer than 107 bytes"),
    ("unix://", "empty socket path"),
    ("unix://@", "empty abstract socket name"),
    ("unix://@" + "n" * 108, "abstract name is longer than 107 bytes"),
    ("unix:///" + "p" * 107, "longer than 107 bytes"),
    ("unix:///a\0b", "NUL byte"),
    ("/a\0b", "NUL byte"),
    ("vsock://3", "missing :PORT"),
    ("vsock://abc:1024", "CID 'abc' is not a number"),
    ("vsock://-2:1024", "CID '-2' is not a number"),
    ("vsock://4294967296:1", "CID '4294967296' is not a number"),
    ("vsock://3:", "port '' is not a decimal number"),
    ("vsock://3:x", "port 'x' is not a decimal number"),
    ("vsock://3:99999999999", "out of range"),
]


@pytest.mark.parametrize(("text", "why"), INVALID, ids=[repr(text)[:40] for text, _ in INVALID])
def test_invalid_forms(text: str, why: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_address(text)
    message = str(info.value)
    assert message.startswith(f"invalid address {text!r}: ")
    assert why in message
    assert any("hvsock://PATH:PORT" in hint for hint in info.value.hints)
    assert isinstance(info.value, UsageError)  # a usage error: exit code 2
    assert info.value.exit_code == 2


def test_longest_unix_path_is_accepted() -> None:
    path = "/" + "p" * 106  # 107 bytes: sun_path minus its NUL
    assert parse_address(path) == UnixAddress(path)
    assert parse_address("unix://@" + "n" * 107) == UnixAddress("n" * 107, abstract=True)


def test_multibyte_path_length_counts_bytes() -> None:
    with pytest.raises(AddressError, match="longer than 107 bytes"):
        parse_address("/" + "é" * 60)  # 60 characters, 121 bytes


@pytest.mark.parametrize(
    "text",
    [
        "hvsock:///run/kuasar-vmm/abc/task.vsock:1024",
        "unix:///run/x.sock",
        "unix://@name",
        "vsock://3:1024",
        "vsock://-1:1025",
    ],
)
def test_str_round_trips(text: str) -> None:
    address = parse_address(text)
    assert str(address) == text
    assert parse_address(str(address)) == address


def test_any_cid_prints_as_minus_one() -> None:
    assert str(parse_address("vsock://any:9")) == "vsock://-1:9"


def test_records_are_frozen_and_hashable() -> None:
    address = parse_address("hvsock:///x:1")
    with pytest.raises(AttributeError, match="frozen"):
        address.port = 2  # type: ignore[misc]
    assert len({parse_address("unix:///a"), parse_address("/a"), parse_address("unix://@a")}) == 2


def test_sockaddr_of_path_and_abstract() -> None:
    assert UnixAddress("/run/x.sock").sockaddr == "/run/x.sock"
    assert UnixAddress("name", abstract=True).sockaddr == "\0name"


def test_with_port_changes_only_the_port() -> None:
    assert with_port(HvsockAddress("/s", 1024), 1025) == HvsockAddress("/s", 1025)
    assert with_port(VsockAddress(3, 1024), 1025) == VsockAddress(3, 1025)


def test_with_port_turns_a_unix_socket_into_hvsock() -> None:
    assert with_port(UnixAddress("/run/kuasar/p/task.socket"), 1025) == HvsockAddress(
        "/run/kuasar/p/task.socket", 1025
    )


def test_with_port_refuses_abstract_socket() -> None:
    with pytest.raises(AddressError, match="abstract UNIX socket and has no ports"):
        with_port(UnixAddress("name", abstract=True), 1025)
