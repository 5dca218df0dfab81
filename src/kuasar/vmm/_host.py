"""The host side of the hybrid vsock socket: accepted clients, guest-initiated dials (IO).

Layer contract: sockets and ``selectors`` only; imports ``kuasar.config``, ``kuasar.errors``,
``kuasar._log`` and this package's sans-IO :mod:`.vsock_conn` / :mod:`.vsock_device`. It moves bytes
between host UNIX sockets and the muxer's links, exactly as the links say (read budget, queued
bytes, half-close, close); it decides nothing about the protocol.
"""

from __future__ import annotations

import contextlib
import os
import select
import selectors
import socket
import stat
from collections.abc import Callable

from kuasar import _log
from kuasar.config import LISTEN_BACKLOG, Limits
from kuasar.errors import KuasarError
from kuasar.vmm.vsock_conn import Link, State
from kuasar.vmm.vsock_device import Muxer

__all__ = ["HostSockets", "bind_unix", "unlink_socket"]

#: How often host sockets of stalled streams are checked for a hang-up.
_HANGUP_CHECK = 1.0

log = _log.get_logger("kuasar.vmm.device")

_Callback = Callable[[int], None]


class HostSockets:
    """Every host socket of one device: the listener on ``uds_path`` and one socket per link."""

    def __init__(
        self,
        selector: selectors.BaseSelector,
        muxer: Muxer,
        uds_path: str,
        limits: Limits,
        clock: Callable[[], float],
    ) -> None:
        self._selector = selector
        self._muxer = muxer
        self.uds_path = uds_path
        self._limits = limits
        self._clock = clock
        self._listener: socket.socket | None = None
        self._socks: dict[int, socket.socket] = {}  # link id -> host socket
        self._shut: set[int] = set()  # link ids whose host socket was shut for writing
        self._hangups: dict[int, tuple[float, tuple[int, int]]] = {}  # link id -> (since, progress)
        self.next_check = 0.0

    def listen(self) -> None:
        """Bind ``uds_path`` and accept host clients.

        Raises:
            KuasarError: the path cannot be bound.
        """
        self._listener = bind_unix(self.uds_path)
        self._selector.register(self._listener, selectors.EVENT_READ, self._accept)

    def close(self) -> None:
        """Close the listener and remove the socket file (links are closed through the muxer)."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        unlink_socket(self.uds_path)

    def __bool__(self) -> bool:
        return bool(self._socks)

    def __contains__(self, link_id: int) -> bool:
        return link_id in self._socks

    def _accept(self, mask: int) -> None:
        listener = self._listener
        while listener is not None:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("accept on %s failed: %s", self.uds_path, exc)
                return
            link = self._muxer.host_accepted(self._clock())
            if link is None:
                sock.close()
                continue
            sock.setblocking(False)
            self._socks[link.id] = sock
            self._selector.register(sock, selectors.EVENT_READ, self._host_callback(link))

    def _host_callback(self, link: Link) -> _Callback:
        def ready(mask: int) -> None:
            if mask & selectors.EVENT_READ:
                self._host_readable(link)
            if mask & selectors.EVENT_WRITE:
                self._muxer.changed.add(link)

        return ready

    def _host_readable(self, link: Link) -> None:
        sock = self._socks.get(link.id)
        budget = link.read_budget()
        if sock is None or budget <= 0:
            self._muxer.changed.add(link)
            return
        try:
            data = sock.recv(budget)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._muxer.host_failed(link, str(exc))
            return
        if data:
            self._muxer.host_data(link, data, self._clock())
        else:
            self._muxer.host_eof(link)

    def check_hangups(self, now: float) -> None:
        """Once a second, look for host clients that hung up on a stalled stream.

        A stream the guest does not read has no read interest on its host socket, so a client's
        close is not seen by reading. If such a client hung up (POLLHUP/POLLERR) and the stream
        made no progress for ``Limits.shutdown_grace``, the stream is reset (as a vanished client).
        """
        if now < self.next_check:
            return
        self.next_check = now + _HANGUP_CHECK
        poller = select.poll()
        watched: dict[int, Link] = {}
        for link_id, sock in self._socks.items():
            link = self._muxer.links.get(link_id)
            if link is not None and link.state is State.ESTABLISHED and link.read_budget() <= 0:
                poller.register(sock, select.POLLRDHUP)
                watched[sock.fileno()] = link
        hung = set()
        for fd, events in poller.poll(0):
            if events & (select.POLLHUP | select.POLLERR) and fd in watched:
                hung.add(watched[fd].id)
                self._stalled(watched[fd], now)
        for link_id in set(self._hangups) - hung:
            del self._hangups[link_id]

    def _stalled(self, link: Link, now: float) -> None:
        progress = (link.tx_cnt, link.fwd_cnt)
        since, seen = self._hangups.get(link.id, (now, progress))
        if seen != progress:
            since = now
        self._hangups[link.id] = (since, progress)
        if now - since >= self._limits.shutdown_grace:
            self._muxer.host_failed(link, "the host client hung up while the guest was not reading")
            self.sync()

    def sync(self) -> None:
        changed = self._muxer.changed
        while changed:
            self._sync(changed.pop())

    def _sync(self, link: Link) -> None:
        """Bring ``link``'s host socket in line with the muxer: dial, write, shut, close, interest."""
        if link.state is State.DIALING and link.id not in self._socks:
            self._dial(link)
            return
        sock = self._socks.get(link.id)
        if sock is None:
            self._muxer.host_closed(link)
            return
        if not link.abort and not self._flush(link, sock):
            return
        pending = bool(link.reply or link.to_host)
        if link.abort or (link.close_host and not pending):
            self._close_host(link, sock)
            return
        if link.shut_host_write and not pending and link.id not in self._shut:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
            self._shut.add(link.id)
        events = (selectors.EVENT_READ if link.read_budget() > 0 else 0) | (
            selectors.EVENT_WRITE if pending else 0
        )
        self._interest(sock, events, link)

    def _flush(self, link: Link, sock: socket.socket) -> bool:
        """Write the OK line and queued guest bytes; False when the socket failed."""
        try:
            while link.reply:
                sent = sock.send(link.reply)
                link.reply = link.reply[sent:]
            while link.to_host:
                sent = sock.send(link.to_host)
                self._muxer.host_sent(link, sent)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError as exc:
            self._muxer.host_failed(link, str(exc))
            return False
        return True

    def _interest(self, sock: socket.socket, events: int, link: Link) -> None:
        try:
            key = self._selector.get_key(sock)
        except KeyError:
            if events:
                self._selector.register(sock, events, self._host_callback(link))
            return
        if not events:
            self._selector.unregister(sock)
        elif key.events != events:
            self._selector.modify(sock, events, key.data)

    def _close_host(self, link: Link, sock: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)
        sock.close()
        del self._socks[link.id]
        self._shut.discard(link.id)
        self._hangups.pop(link.id, None)
        self._muxer.host_closed(link)

    def _dial(self, link: Link) -> None:
        path = f"{self.uds_path}_{link.local_port}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(path)
        except OSError as exc:  # BlockingIOError too: the listener's backlog is full
            log.debug("[link=%d] guest connection to %s refused: %s", link.id, path, exc)
            sock.close()
            self._muxer.dial_done(link, ok=False)
            self._muxer.host_closed(link)
            return
        self._socks[link.id] = sock
        self._muxer.dial_done(link, ok=True)
        self._muxer.changed.add(link)


def bind_unix(path: str) -> socket.socket:
    unlink_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise KuasarError(f"cannot listen on {path}: {exc.strerror or exc}") from exc
    sock.setblocking(False)
    return sock


def unlink_socket(path: str) -> None:
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
