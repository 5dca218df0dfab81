"""One virtio-vsock stream between a host UNIX socket and a guest port, sans-IO.

Layer contract: knows bytes, ports and counters only; imports ``kuasar.errors``,
``kuasar.transport._handshake``'s sans-IO line reader, and :mod:`.vsock_packet`. The muxer
(:mod:`.vsock_device`) routes packets here and owns the port table; the driver moves the bytes
between :attr:`Link.to_host` and the host socket and asks :meth:`Link.read_budget` how much it may
read from it.

Credit (virtio spec, "Flow control"), both ways:

- guest → host: we advertise ``buf_alloc``; the guest may have at most that many bytes in flight,
  i.e. received by us and not yet written to the host socket (``len(to_host)``). More is a credit
  violation and resets the stream. ``fwd_cnt`` counts bytes written to the host; Linux never asks
  for credit (facts §5), so a CREDIT_UPDATE goes out unprompted once the guest has not seen
  ``buf_alloc / 4`` of it, and every packet carries the current ``fwd_cnt``.
- host → guest: the guest's free space is ``peer_buf_alloc - (tx_cnt - peer_fwd_cnt)``. We read
  the host socket only while it is positive (minus what is queued for the guest), and send one
  CREDIT_REQUEST when it runs out.

Close (facts §6): the guest's SHUTDOWN with both flags flushes ``to_host``, closes the host socket
and is answered with RST; SHUTDOWN(SEND) alone half-closes the host socket once flushed. Host EOF
becomes SHUTDOWN(SEND) to the guest after the queued data, so a half-closed host client still gets
its answer.
"""

from __future__ import annotations

import enum

from kuasar.transport._handshake import HandshakeReader
from kuasar.vmm.vsock_packet import SHUTDOWN_BOTH, SHUTDOWN_RCV, SHUTDOWN_SEND, Header, Op

__all__ = ["Link", "State"]

#: The most bytes read from a host socket in one go.
MAX_READ = 64 * 1024


class State(enum.Enum):
    HANDSHAKE = "handshake"  # host client: reading its CONNECT line
    CONNECTING = "connecting"  # host client: REQUEST sent, waiting for RESPONSE or RST
    DIALING = "dialing"  # guest REQUEST: the driver connects to task.socket_<port>
    ESTABLISHED = "established"
    CLOSED = "closed"  # the vsock stream is over; the host socket is flushed, then closed


class Link:
    """The state of one stream. Created by the muxer; ``id`` is unique for the muxer's life.

    Attributes:
        to_host: guest bytes not yet written to the host socket (the driver writes them and
            reports with :meth:`host_sent`).
        shut_host_write: once ``to_host`` is empty, ``shutdown(SHUT_WR)`` the host socket.
        close_host: once ``to_host`` is empty (or at once when ``abort``), close the host socket.
        abort: close the host socket now, dropping ``to_host``.
        reply: the ``OK <port>\\n`` line (or nothing) to write to the host before ``to_host``.
    """

    def __init__(self, link_id: int, state: State, *, buf_alloc: int, handshake_line: int) -> None:
        self.id = link_id
        self.state = state
        self.local_port = 0  # the host side's vsock port
        self.peer_port = 0  # the guest's
        self.deadline: float | None = None
        self.buf_alloc = buf_alloc
        self.handshake_line = handshake_line
        self.reader = HandshakeReader(handshake_line) if state is State.HANDSHAKE else None
        self.reply = b""
        # host -> guest
        self.to_guest = bytearray()
        self.tx_cnt = 0
        self.peer_buf_alloc = 0
        self.peer_fwd_cnt = 0
        self.host_eof = False
        self.shutdown_sent = False
        self.credit_requested = False
        # guest -> host
        self.to_host = bytearray()
        self.fwd_cnt = 0
        self.fwd_cnt_told = 0
        self.peer_shutdown = 0
        self.shut_host_write = False
        self.close_host = False
        self.abort = False
        # control packets owed to the guest (at most one of each)
        self.want: set[Op] = set()

    def __repr__(self) -> str:
        return f"<Link {self.id} {self.state.value} {self.local_port}<->{self.peer_port}>"

    # ------------------------------------------------------------------ credit

    def peer_free(self) -> int:
        """Bytes the guest can take now (its advertised space minus what is in flight)."""
        return max(self.peer_buf_alloc - ((self.tx_cnt - self.peer_fwd_cnt) & 0xFFFFFFFF), 0)

    def read_budget(self) -> int:
        """How many bytes the driver may read from the host socket now (0: do not read)."""
        if self.state is State.HANDSHAKE:
            assert self.reader is not None
            return self.handshake_line - len(self.reader.received)
        if self.state is not State.ESTABLISHED or self.host_eof or self.peer_shutdown & SHUTDOWN_RCV:
            return 0
        # Bounded by the guest's credit and by our own buffer size (a guest may advertise 4 GiB).
        room = min(self.peer_free(), self.buf_alloc) - len(self.to_guest)
        return max(min(room, MAX_READ), 0)

    def update_credit(self, header: Header) -> None:
        """Every guest packet tells its buffer size and forward count."""
        self.peer_buf_alloc = header.buf_alloc
        self.peer_fwd_cnt = header.fwd_cnt
        if self.peer_free() > 0:
            self.credit_requested = False

    # ------------------------------------------------------------------ guest packets

    def on_guest(self, header: Header, payload: bytes) -> bool:
        """Apply a packet from the guest on an established stream.

        Returns:
            False when the stream must be reset (a credit violation or a bad op).
        """
        self.update_credit(header)
        op = header.op
        if op == Op.RW:
            return self._receive(payload)
        if op == Op.CREDIT_REQUEST:
            self.want.add(Op.CREDIT_UPDATE)
        elif op == Op.SHUTDOWN:
            self.peer_shutdown |= header.flags & SHUTDOWN_BOTH
            if self.peer_shutdown & SHUTDOWN_RCV:
                self.to_guest.clear()
            self._settle_shutdown()
        elif op != Op.CREDIT_UPDATE:
            return False
        return True

    def _receive(self, payload: bytes) -> bool:
        if self.peer_shutdown & SHUTDOWN_SEND or self.close_host:
            return False  # data after the guest said it would send no more
        if len(self.to_host) + len(payload) > self.buf_alloc:
            return False  # the guest ignored our credit
        self.to_host += payload
        return True

    def _settle_shutdown(self) -> None:
        """The guest shut one or both directions: half-close or close the host side when flushed."""
        if self.peer_shutdown == SHUTDOWN_BOTH:
            self.close_host = True
        elif self.peer_shutdown & SHUTDOWN_SEND:
            self.shut_host_write = True

    def finished(self) -> bool:
        """Both directions are over: the guest closed, or both sides shut their sending side."""
        if self.state is not State.ESTABLISHED:
            return False
        if self.peer_shutdown == SHUTDOWN_BOTH:
            return True
        return bool(self.peer_shutdown & SHUTDOWN_SEND) and self.shutdown_sent

    # ------------------------------------------------------------------ host side

    def host_sent(self, count: int) -> None:
        """The driver wrote ``count`` bytes of :attr:`to_host` to the host socket."""
        del self.to_host[:count]
        self.fwd_cnt = (self.fwd_cnt + count) & 0xFFFFFFFF
        if (self.fwd_cnt - self.fwd_cnt_told) & 0xFFFFFFFF >= self.buf_alloc // 4:
            self.want.add(Op.CREDIT_UPDATE)

    def host_data(self, data: bytes) -> None:
        """Bytes read from the host socket on an established stream (within :meth:`read_budget`)."""
        self.to_guest += data

    # ------------------------------------------------------------------ packets to the guest

    def has_rx(self) -> bool:
        """Whether :meth:`next_packet` has something to send."""
        if self.want:
            return True
        if self.state is not State.ESTABLISHED:
            return False
        if self.to_guest and self.peer_free() > 0:
            return True
        return self._shutdown_due() or self._credit_request_due()

    def _shutdown_due(self) -> bool:
        return self.host_eof and not self.to_guest and not self.shutdown_sent

    def _credit_request_due(self) -> bool:
        return bool(self.to_guest) and self.peer_free() == 0 and not self.credit_requested

    def next_packet(self, room: int) -> tuple[int, int, bytes] | None:
        """The next packet for the guest, as ``(op, flags, payload)``; ``room`` bounds the payload.

        Order: REQUEST/RESPONSE, data, SHUTDOWN after the last data, then credit messages (every
        packet carries ``fwd_cnt``, so data clears a pending CREDIT_UPDATE).
        """
        for op in (Op.REQUEST, Op.RESPONSE):
            if op in self.want:
                self.want.discard(op)
                return self._sent(op, 0, b"")
        if self.state is State.ESTABLISHED:
            size = min(len(self.to_guest), room, self.peer_free())
            if size > 0:
                payload = bytes(self.to_guest[:size])
                del self.to_guest[:size]
                self.tx_cnt = (self.tx_cnt + size) & 0xFFFFFFFF
                return self._sent(Op.RW, 0, payload)
            if self._shutdown_due():
                self.shutdown_sent = True
                return self._sent(Op.SHUTDOWN, SHUTDOWN_SEND, b"")
            if self._credit_request_due():
                self.credit_requested = True
                return self._sent(Op.CREDIT_REQUEST, 0, b"")
        if Op.CREDIT_UPDATE in self.want:
            return self._sent(Op.CREDIT_UPDATE, 0, b"")
        self.want.clear()  # nothing else is ever wanted outside ESTABLISHED
        return None

    def _sent(self, op: Op, flags: int, payload: bytes) -> tuple[int, int, bytes]:
        self.fwd_cnt_told = self.fwd_cnt
        self.want.discard(Op.CREDIT_UPDATE)
        return op, flags, payload
