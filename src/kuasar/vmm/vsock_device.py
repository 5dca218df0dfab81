"""The hybrid-vsock muxer of the virtio-vsock device, sans-IO.

Layer contract: knows packets, ports, host links and clock values handed in; no sockets, no
event loop; imports ``kuasar.config``, ``kuasar.errors``, ``kuasar._log``, the sans-IO CONNECT
parser of ``kuasar.transport._handshake`` and this package's :mod:`.vsock_packet` and
:mod:`.vsock_conn`. The driver feeds what the host sockets and the tx queue gave, fills rx buffers
from :meth:`Muxer.next_rx`, and after each round looks at every link in :attr:`Muxer.changed`.

Host side, as Cloud Hypervisor's muxer and our ``transport/hvsock_server.py`` (one parser, shared):

- a client of ``task.socket`` sends ``CONNECT <port>\\n`` (read with
  :class:`~kuasar.transport._handshake.HandshakeReader`, bounded by ``Limits.handshake_line``, parsed by
  :func:`~kuasar.transport._handshake.parse_connect_line`); the device sends the guest a REQUEST from
  host port 2^30 upward, and on RESPONSE replies ``OK <host_port>\\n``. Bytes after the newline are
  kept and sent once the stream is up (facts §9).
- refusals close without a reply: a malformed, oversize or incomplete line, no line within
  ``Limits.handshake_timeout``, the guest's RST (no listener), or no answer within
  ``request_timeout`` (then the guest gets an RST too).
- a guest REQUEST to host port P becomes a connection to ``<uds_path>_P`` (the driver dials it);
  RESPONSE when it connects, RST when it does not.
"""

from __future__ import annotations

import collections
import itertools

from kuasar import _log
from kuasar.config import DEFAULT_LIMITS, Limits
from kuasar.errors import HandshakeError
from kuasar.transport._handshake import FIRST_HOST_PORT, describe, next_host_port, parse_connect_line
from kuasar.vmm.vsock_conn import Link, State
from kuasar.vmm.vsock_packet import HOST_CID, TYPE_STREAM, Header, Op, PacketError, decode_packet

__all__ = ["Muxer"]

#: Bound on control packets queued for ports that have no stream (RSTs to strays).
_MAX_CONTROL = 1024

log = _log.get_logger("kuasar.vmm.vsock")


class Muxer:
    """Streams between host UNIX sockets and the guest, over one vsock device.

    Args:
        guest_cid: the guest's CID (what GET_CONFIG reported).
        limits: ``handshake_line`` and ``handshake_timeout`` bound the CONNECT line;
            ``vsock_buf_alloc`` is our receive buffer per stream, ``vsock_request_timeout`` how long
            a host CONNECT waits for the guest's answer, ``vsock_max_streams`` the most streams (and
            host clients in handshake) at once — more are refused.
    """

    def __init__(
        self,
        guest_cid: int,
        *,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.guest_cid = guest_cid
        self.buf_alloc = limits.vsock_buf_alloc
        self.limits = limits
        self.request_timeout = limits.vsock_request_timeout
        self.max_links = limits.vsock_max_streams
        #: False while the device's queues are not running: a CONNECT is then refused at once.
        self.online = True
        self.links: dict[int, Link] = {}
        #: Links whose host socket needs attention (write, read interest, shutdown, close, dial).
        self.changed: set[Link] = set()
        self._routes: dict[tuple[int, int], Link] = {}
        self._control: collections.deque[bytes] = collections.deque()
        self._rx: collections.deque[Link] = collections.deque()
        self._in_rx: set[Link] = set()
        self._ids = itertools.count(1)
        self._next_port = FIRST_HOST_PORT

    # ------------------------------------------------------------------ host side

    def host_accepted(self, now: float) -> Link | None:
        """A client connected to the hybrid socket; ``None``: too many links, close it at once."""
        if len(self.links) >= self.max_links:
            log.warning("refusing a host client: %d links open", len(self.links))
            return None
        link = self._new(State.HANDSHAKE)
        link.deadline = now + self.limits.handshake_timeout
        return link

    def host_data(self, link: Link, data: bytes, now: float) -> None:
        """Bytes read from ``link``'s host socket (at most its :meth:`Link.read_budget`)."""
        if link.state is State.HANDSHAKE:
            self._handshake(link, data, now)
        elif link.state is State.ESTABLISHED:
            link.host_data(data)
        self._touch(link)

    def _handshake(self, link: Link, data: bytes, now: float) -> None:
        assert link.reader is not None
        try:
            line, rest = link.reader.feed(data)
            port = None if line is None else parse_connect_line(line)
        except HandshakeError as exc:
            log.debug("[link=%d] dropped without reply: %s", link.id, exc)
            self._drop(link)
            return
        if port is None:
            if link.read_budget() <= 0:  # the limit is reached and no newline came
                log.debug("[link=%d] dropped without reply: line over the limit", link.id)
                self._drop(link)
            return
        if not self.online:
            log.debug("[link=%d] CONNECT %d: the guest's device is not running, closed", link.id, port)
            self._drop(link)
            return
        link.to_guest += rest
        link.peer_port = port
        link.local_port = self._allocate_port(port)
        link.state = State.CONNECTING
        link.deadline = now + self.request_timeout
        link.want.add(Op.REQUEST)
        self._routes[(link.local_port, port)] = link
        log.debug("[link=%d] CONNECT %d -> REQUEST from host port %d", link.id, port, link.local_port)

    def _allocate_port(self, peer_port: int) -> int:
        while True:
            port, self._next_port = self._next_port, next_host_port(self._next_port)
            if (port, peer_port) not in self._routes:
                return port

    def host_eof(self, link: Link) -> None:
        """The host client half-closed (read gave EOF)."""
        link.host_eof = True
        if link.state is State.HANDSHAKE:
            log.debug("[link=%d] closed before a complete line (received %s)", link.id, self._seen(link))
            self._drop(link)
        elif link.state in (State.CONNECTING, State.DIALING):
            self._end(link, rst=True, abort=True)
        self._touch(link)

    def host_failed(self, link: Link, reason: str) -> None:
        """Reading or writing the host socket failed (reset, broken pipe): reset the stream."""
        log.debug("[link=%d] host side failed: %s", link.id, reason)
        self._end(link, rst=link.state is not State.HANDSHAKE, abort=True)

    def host_sent(self, link: Link, count: int) -> None:
        """``count`` bytes of ``link.to_host`` reached the host socket."""
        link.host_sent(count)
        self._touch(link)

    def host_closed(self, link: Link) -> None:
        """The driver closed ``link``'s host socket: forget the link."""
        if link.state is not State.CLOSED:
            self._end(link, rst=link.state is not State.HANDSHAKE, abort=True)
        self.links.pop(link.id, None)
        self.changed.discard(link)

    def dial_done(self, link: Link, ok: bool) -> None:
        """The driver's connect to ``<uds_path>_<port>`` for a guest REQUEST succeeded or not."""
        if link.state is not State.DIALING:
            return
        if not ok:
            self._end(link, rst=True, abort=True)
            return
        link.state = State.ESTABLISHED
        link.want.add(Op.RESPONSE)
        self._touch(link)

    @staticmethod
    def _seen(link: Link) -> str:
        return describe(link.reader.received) if link.reader is not None else "nothing"

    # ------------------------------------------------------------------ guest side

    def guest_packet(self, data: bytes) -> None:
        """One buffer of the tx queue. A malformed or stray packet is logged, never raised."""
        try:
            header, payload = decode_packet(data)
        except PacketError as exc:
            log.warning("dropping a tx packet: %s", exc)
            return
        if header.src_cid != self.guest_cid or header.dst_cid != HOST_CID:
            log.warning("dropping %s from cid %d to cid %d", header.op_name, header.src_cid, header.dst_cid)
            return
        link = self._routes.get((header.dst_port, header.src_port))
        if header.type != TYPE_STREAM:
            self._reply_rst(header)
            if link is not None:
                self._end(link, rst=False, abort=True)
        elif link is None:
            self._stray(header)
        elif header.op == Op.RST:
            self._end(link, rst=False, abort=link.state is not State.ESTABLISHED)
        else:
            self._on_link(link, header, payload)

    def _stray(self, header: Header) -> None:
        if header.op == Op.REQUEST:
            self._guest_request(header)
        elif header.op != Op.RST:
            self._reply_rst(header)

    def _guest_request(self, header: Header) -> None:
        if len(self.links) >= self.max_links:
            self._reply_rst(header)
            return
        link = self._new(State.DIALING)
        link.local_port, link.peer_port = header.dst_port, header.src_port
        link.update_credit(header)
        self._routes[(link.local_port, link.peer_port)] = link
        log.debug(
            "[link=%d] guest port %d connects to host port %d", link.id, link.peer_port, link.local_port
        )
        self._touch(link)

    def _on_link(self, link: Link, header: Header, payload: bytes) -> None:
        if link.state is State.CONNECTING:
            if header.op != Op.RESPONSE:
                self._end(link, rst=True, abort=True)
                return
            link.update_credit(header)
            link.state = State.ESTABLISHED
            link.deadline = None
            link.reply = b"OK %d\n" % link.local_port
            log.debug("[link=%d] RESPONSE: OK %d", link.id, link.local_port)
        elif link.state is not State.ESTABLISHED or not link.on_guest(header, payload):
            log.debug("[link=%d] %s in %s: reset", link.id, header.op_name, link.state.value)
            self._end(link, rst=True, abort=True)
            return
        if link.finished():
            self._end(link, rst=True, abort=False)
        self._touch(link)

    def _reply_rst(self, header: Header) -> None:
        if len(self._control) < _MAX_CONTROL:
            self._control.append(self._header(header.dst_port, header.src_port, Op.RST, 0, 0, 0))

    # ------------------------------------------------------------------ packets to the guest

    def has_rx(self) -> bool:
        return bool(self._control or self._rx)

    def next_rx(self, room: int) -> tuple[bytes, bytes] | None:
        """The next packet for the guest as ``(header, payload)``, payload at most ``room`` bytes."""
        if self._control:
            return self._control.popleft(), b""
        while self._rx:
            link = self._rx.popleft()
            packet = link.next_packet(room)
            if packet is None:
                self._in_rx.discard(link)
                continue
            op, flags, payload = packet
            if link.has_rx():
                self._rx.append(link)
            else:
                self._in_rx.discard(link)
            header = self._header(link.local_port, link.peer_port, op, flags, len(payload), link.fwd_cnt)
            if link.finished():
                self._end(link, rst=True, abort=False)
            self.changed.add(link)
            return header, payload
        return None

    def _header(self, local: int, peer: int, op: int, flags: int, size: int, fwd_cnt: int) -> bytes:  # noqa: PLR0917
        return Header(
            HOST_CID, self.guest_cid, local, peer, size, TYPE_STREAM, op, flags, self.buf_alloc, fwd_cnt
        ).encode()

    # ------------------------------------------------------------------ time and teardown

    def tick(self, now: float) -> float | None:
        """Expire handshakes and unanswered CONNECTs; returns the next deadline, if any."""
        soonest: float | None = None
        for link in list(self.links.values()):
            if link.deadline is None or link.state is State.CLOSED:
                continue
            if link.deadline <= now:
                log.debug(
                    "[link=%d] no answer in time (%s): closing without reply", link.id, link.state.value
                )
                self._end(link, rst=link.state is State.CONNECTING, abort=True)
            elif soonest is None or link.deadline < soonest:
                soonest = link.deadline
        return soonest

    def reset(self) -> None:
        """The device stopped (rings stopped, front-end gone): every stream ends, host sockets close."""
        for link in list(self.links.values()):
            self._end(link, rst=False, abort=True)
        self._control.clear()
        self._rx.clear()
        self._in_rx.clear()

    # ------------------------------------------------------------------ internals

    def _new(self, state: State) -> Link:
        link = Link(
            next(self._ids), state, buf_alloc=self.buf_alloc, handshake_line=self.limits.handshake_line
        )
        self.links[link.id] = link
        self.changed.add(link)
        return link

    def _touch(self, link: Link) -> None:
        self.changed.add(link)
        if link.state is not State.CLOSED and link not in self._in_rx and link.has_rx():
            self._in_rx.add(link)
            self._rx.append(link)

    def _drop(self, link: Link) -> None:
        """Close a host client that never got a stream (no reply, nothing to the guest)."""
        link.state = State.CLOSED
        link.close_host = link.abort = True
        self.changed.add(link)

    def _end(self, link: Link, *, rst: bool, abort: bool) -> None:
        """The stream is over: optionally RST the guest; close the host socket (flushed unless
        ``abort``)."""
        if link.state is State.CLOSED:
            return
        if self._routes.get((link.local_port, link.peer_port)) is link:
            del self._routes[(link.local_port, link.peer_port)]
        if rst and len(self._control) < _MAX_CONTROL:
            self._control.append(self._header(link.local_port, link.peer_port, Op.RST, 0, 0, link.fwd_cnt))
        link.state = State.CLOSED
        link.want.clear()
        link.to_guest.clear()
        link.close_host = True
        link.abort = link.abort or abort
        if link.abort:
            link.to_host.clear()
        self.changed.add(link)
