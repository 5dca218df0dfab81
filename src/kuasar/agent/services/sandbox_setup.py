"""What ``SetupSandbox``, ``UpdateInterfaces`` and ``UpdateRoutes`` do to a guest, as plans.

Layer contract: agent side; stdlib plus the generated ``sandbox_pb2`` types and
``kuasar.agent.process``'s bounded kill of a helper command. Parses the CRI
``PodSandboxConfig`` JSON (serde's field names, as Kuasar's vmm-sandboxer sends it) into
:class:`PodSettings`, and turns settings, interfaces and routes into :class:`Action` lists: each
action is either a command line (``ip …``) or a named change (hostname, resolv.conf, sysctl) and is
applied or only reported by :mod:`kuasar.agent.services.sandbox`, which owns the policy. Nothing here
changes the system except :func:`run_commands`, :func:`write_file` and :func:`set_hostname`, which
the service calls only when its policy permits. Invalid input raises :class:`ValueError` with a message
that names the field; a link that does not exist raises :class:`LookupError`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kuasar.agent.process import kill_subprocess
from kuasar.proto import sandbox_pb2

IFF_NOARP = 0x80
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,62}[A-Za-z0-9])?$")
_SYSCTL_KEY = re.compile(r"^[A-Za-z0-9_-]+([./][A-Za-z0-9_-]+)*$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_MAX_DNS_ENTRIES = 64
_MAX_TEXT = 4096
_STDERR_MAX = 16 * 1024


class PodConfigError(ValueError):
    """The PodSandboxConfig JSON is malformed; the message names the field."""


@dataclass(frozen=True)
class PodSettings:
    """The parts of a CRI ``PodSandboxConfig`` the guest applies."""

    hostname: str = ""
    dns_servers: tuple[str, ...] = ()
    dns_searches: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()
    name: str = ""
    namespace: str = ""
    uid: str = ""


@dataclass(frozen=True)
class Action:
    """One change to the guest.

    Attributes:
        kind: ``hostname``, ``resolv.conf``, ``sysctl``, ``interface`` or ``route``.
        detail: what the change is, in words (the hostname, the file, ``key=value``).
        argv: the command that makes it, for ``ip`` changes; empty for in-process changes.
        applied: set by the service: True when done, False when only reported.
    """

    kind: str
    detail: str
    argv: tuple[str, ...] = ()
    applied: bool = False
    data: str = field(default="", repr=False)


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PodConfigError(f"{where} must be an object, got {type(value).__name__}")
    return value


def _text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PodConfigError(f"{where} must be a string, got {type(value).__name__}")
    if len(value) > _MAX_TEXT or "\n" in value or "\x00" in value:
        raise PodConfigError(f"{where} must be one line of at most {_MAX_TEXT} characters")
    return value


def _texts(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise PodConfigError(f"{where} must be a list of strings, got {type(value).__name__}")
    if len(value) > _MAX_DNS_ENTRIES:
        raise PodConfigError(f"{where} has {len(value)} entries, at most {_MAX_DNS_ENTRIES} are accepted")
    return tuple(_text(v, f"{where}[{i}]") for i, v in enumerate(value))


def parse_pod_config(data: bytes) -> PodSettings:
    """Parse the serde JSON of a CRI ``PodSandboxConfig``.

    Missing fields take their defaults (as prost/serde do for absent optionals); unknown fields are
    ignored.

    Raises:
        ValueError: not JSON, not an object, or a field of the wrong type or form.
    """
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PodConfigError(f"PodSandboxConfig is not valid JSON: {exc}") from None
    root = _obj(doc, "PodSandboxConfig")
    metadata = _obj(root.get("metadata"), "metadata")
    dns = _obj(root.get("dns_config"), "dns_config")
    linux = _obj(root.get("linux"), "linux")
    hostname = _text(root.get("hostname"), "hostname")
    if hostname and not _HOSTNAME.match(hostname):
        raise PodConfigError(f"hostname {hostname!r} is not a valid host name (1-64 of A-Z a-z 0-9 . -)")
    sysctls = []
    for key, value in sorted(_obj(linux.get("sysctls"), "linux.sysctls").items()):
        if not _SYSCTL_KEY.match(key):
            raise PodConfigError(f"linux.sysctls: {key!r} is not a sysctl name")
        sysctls.append((key, _text(value, f"linux.sysctls[{key!r}]")))
    return PodSettings(
        hostname=hostname,
        dns_servers=_texts(dns.get("servers"), "dns_config.servers"),
        dns_searches=_texts(dns.get("searches"), "dns_config.searches"),
        dns_options=_texts(dns.get("options"), "dns_config.options"),
        sysctls=tuple(sysctls),
        name=_text(metadata.get("name"), "metadata.name"),
        namespace=_text(metadata.get("namespace"), "metadata.namespace"),
        uid=_text(metadata.get("uid"), "metadata.uid"),
    )


def resolv_conf_text(servers: Sequence[str], searches: Sequence[str], options: Sequence[str]) -> str:
    """resolv.conf content in the form Kuasar's sandboxer writes (search, nameservers, options)."""
    lines = []
    if searches:
        lines.append("search " + " ".join(searches))
    lines.extend(f"nameserver {server}" for server in servers)
    if options:
        lines.append("options " + " ".join(options))
    return "".join(line + "\n" for line in lines)


def sysctl_path(key: str, root: str = "/proc/sys") -> str:
    """``net.ipv4.ip_forward`` → ``/proc/sys/net/ipv4/ip_forward`` (``/``-separated keys kept)."""
    relative = key if "/" in key else key.replace(".", "/")
    return os.path.join(root, relative)


def settings_actions(settings: PodSettings, resolv_conf: str | None) -> list[Action]:
    """The hostname, DNS and sysctl changes a pod's settings ask for, in the order applied."""
    actions = []
    if settings.hostname:
        actions.append(Action("hostname", settings.hostname))
    if settings.dns_servers or settings.dns_searches or settings.dns_options:
        text = resolv_conf_text(settings.dns_servers, settings.dns_searches, settings.dns_options)
        actions.append(Action("resolv.conf", resolv_conf or "(no resolv.conf path configured)", data=text))
    for key, value in settings.sysctls:
        actions.append(Action("sysctl", f"{key}={value}"))
    return actions


def current_links(sys_class_net: str = "/sys/class/net") -> dict[str, str]:
    """``{mac: name}`` of the network links this kernel has (read from sysfs)."""
    links: dict[str, str] = {}
    try:
        names = sorted(os.listdir(sys_class_net))
    except OSError:
        return links
    for name in names:
        try:
            with open(os.path.join(sys_class_net, name, "address"), "rb") as file:
                mac = file.read(64).decode("ascii", "replace").strip().lower()
        except OSError:
            continue
        links.setdefault(mac, name)
    return links


def _address(value: str, where: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{where}: {value!r} is not an IP address") from None


def interface_actions(
    interfaces: Iterable[sandbox_pb2.Interface], links: Mapping[str, str], *, strict: bool
) -> list[Action]:
    """``ip`` commands that give each interface Kuasar's treatment.

    The link is found by hardware address; it is brought down, its addresses flushed, the requested
    addresses added, then it is renamed, given its MTU and ARP flag, and brought up. A link already
    holding the wanted name is first moved aside to ``<name>-tmp`` (as Kuasar does).

    Args:
        interfaces: the requested interfaces.
        links: ``{mac: name}`` of the existing links (:func:`current_links`).
        strict: a missing link is an error (when applying); otherwise the request's device name
            stands in for it (when only reporting).

    Raises:
        ValueError: a malformed address, mask or hardware address.
        LookupError: ``strict`` and no link has the hardware address.
    """
    actions: list[Action] = []
    names = set(links.values())
    for index, intf in enumerate(interfaces):
        where = f"interfaces[{index}]"
        mac = intf.hwAddr.strip().lower()
        if mac and not _MAC.match(mac):
            raise ValueError(f"{where}.hwAddr: {intf.hwAddr!r} is not a MAC address")
        current = links.get(mac) if mac else None
        if current is None:
            if strict:
                raise LookupError(f"Link not found (hwaddr {intf.hwAddr or '<empty>'})")
            current = intf.device or intf.name or f"<link {mac or '?'}>"
        addresses = []
        for j, ip in enumerate(intf.IPAddresses):
            address = _address(ip.address, f"{where}.IPAddresses[{j}].address")
            if not ip.mask.isdigit() or int(ip.mask) > address.max_prefixlen:
                raise ValueError(f"{where}.IPAddresses[{j}].mask: {ip.mask!r} is not a prefix length")
            addresses.append(f"{address}/{int(ip.mask)}")
        label = intf.name or current
        steps: list[tuple[str, ...]] = [
            ("link", "set", "dev", current, "down"),
            ("addr", "flush", "dev", current),
            *(("addr", "add", cidr, "dev", current) for cidr in addresses),
        ]
        if intf.name and intf.name != current and intf.name in names:
            steps.append(("link", "set", "dev", intf.name, "down"))
            steps.append(("link", "set", "dev", intf.name, "name", f"{intf.name}-tmp"))
        final = ["link", "set", "dev", current]
        if intf.mtu:
            final += ["mtu", str(intf.mtu)]
        if intf.name and intf.name != current:
            final += ["name", intf.name]
        final += ["arp", "off" if intf.raw_flags & IFF_NOARP else "on", "up"]
        steps.append(tuple(final))
        actions.extend(Action("interface", label, ("ip", *step)) for step in steps)
    return actions


def route_actions(routes: Sequence[sandbox_pb2.Route]) -> list[Action]:
    """``ip`` commands that replace the main routing table with ``routes``.

    The main table of each family present is flushed, then routes without a gateway are added
    before routes with one (a gateway must be reachable first), as Kuasar orders them. An empty list
    changes nothing (Kuasar would flush every route; a sandbox without network config keeps its own).

    Raises:
        ValueError: a malformed destination, gateway or source.
    """
    planned: list[tuple[int, tuple[str, ...], str]] = []
    for index, route in enumerate(routes):
        where = f"routes[{index}]"
        version = 6 if route.family == sandbox_pb2.v6 else 4
        dest = "default"
        if route.dest and route.dest != "default":
            try:
                network = ipaddress.ip_network(route.dest, strict=False)
            except ValueError:
                raise ValueError(f"{where}.dest: {route.dest!r} is not an IP network") from None
            dest, version = str(network), network.version
        argv = ["route", "add", dest]
        if route.gateway:
            gateway = _address(route.gateway, f"{where}.gateway")
            version = gateway.version
            argv += ["via", str(gateway)]
        if route.device:
            argv += ["dev", _text(route.device, f"{where}.device")]
        if route.source:
            argv += ["src", str(_address(route.source, f"{where}.source"))]
        argv += ["scope", str(route.scope), "proto", "boot"]
        planned.append((version, (f"-{version}", *argv), route.dest or "default"))
    if not planned:
        return []
    families = sorted({version for version, _, _ in planned})
    actions = [
        Action("route", f"flush IPv{v} main table", ("ip", f"-{v}", "route", "flush", "table", "main"))
        for v in families
    ]
    ordered = [p for p in planned if "via" not in p[1]] + [p for p in planned if "via" in p[1]]
    actions.extend(Action("route", label, ("ip", *argv)) for _, argv, label in ordered)
    return actions


class CommandFailed(Exception):
    """A setup command exited non-zero, could not start or did not finish in time."""


async def run_commands(argvs: Iterable[Sequence[str]], timeout: float, kill_grace: float) -> None:  # noqa: ASYNC109
    """Run each command in turn (no shell), each within ``timeout`` seconds (then SIGKILLed and
    reaped within ``kill_grace``), stopping at the first failure.

    Raises:
        CommandFailed: with the command line and its stderr (bounded).
    """
    for argv in argvs:
        line = " ".join(argv)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise CommandFailed(f"{line}: {exc.strerror or exc}") from None
        assert process.stderr is not None
        try:
            async with asyncio.timeout(timeout):
                stderr = bytearray()
                while chunk := await process.stderr.read(65536):
                    stderr += chunk[: max(0, _STDERR_MAX - len(stderr))]
                await process.wait()
        except TimeoutError:
            raise CommandFailed(f"{line}: did not finish within {timeout:g}s") from None
        finally:
            await kill_subprocess(process, kill_grace)
        if process.returncode != 0:
            message = stderr.decode("utf-8", "replace").strip()
            raise CommandFailed(f"{line}: exit code {process.returncode}: {message}")


def write_file(path: str, text: str) -> None:
    """Write ``text`` to ``path`` in place (resolv.conf is often a bind mount: no rename over it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)


def set_hostname(name: str) -> None:
    """``sethostname(2)`` for this UTS namespace."""
    socket.sethostname(name)
